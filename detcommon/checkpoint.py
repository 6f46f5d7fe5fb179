"""Crash-safe checkpoints: a file appears under its final name only once it is complete.

fvcore's Checkpointer.save writes the checkpoint with `open(final_name, "wb")` and then
rewrites `last_checkpoint` with `open(..., "w")`: a process killed during the first write
leaves a partial `model_XXXXXXX.pth` under its final name (a later --eval-only or a rerun
overwriting model_final.pth may pick it up), and one killed during the second leaves an empty
`last_checkpoint`, which --resume then turns into a path to the output directory itself.
"""
import contextlib
import glob
import logging
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "atomic_open"]

logger = logging.getLogger(__name__)


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Opens a temporary file next to `path` for writing; on success it is flushed, fsynced and
    renamed to `path` (the directory is fsynced too); on an exception it is removed.

    Leftover temporary files of `path` from a killed process are removed first.
    """
    directory, name = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(directory, glob.escape(f".{name}.") + "*.tmp")):
        os.remove(stale)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


class _AtomicLocalWrites:
    """A PathManager whose "w"/"wb" opens of local files go through :func:`atomic_open`."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path, mode="r", **kwargs):
        if mode in ("w", "wb") and "://" not in path:
            return atomic_open(path, mode)
        return self._path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose checkpoint files and `last_checkpoint` tag are written to a
    temporary file, fsynced and renamed into place, and which refuses to save weights that
    hold NaN or inf (the last good checkpoint stays the one --resume picks)."""

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = _AtomicLocalWrites(self.path_manager)

    def save(self, name, **kwargs):
        if self.save_dir and self.save_to_disk:
            floats = {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}
            finite = torch.stack([v.isfinite().all() for v in floats.values()]).tolist()  # one sync
            bad = [k for k, ok in zip(floats, finite) if not ok]
            if bad:
                raise FloatingPointError(
                    f"Not saving checkpoint {name}: the model holds NaN/inf in {', '.join(bad[:5])}"
                    f"{' ...' if len(bad) > 5 else ''}. The last good checkpoint is "
                    f"{self.get_checkpoint_file() or '(none)'}."
                )
        super().save(name, **kwargs)

