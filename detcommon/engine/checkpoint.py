"""Crash-safe checkpoints: a file appears under its final name only once it is complete.

fvcore's Checkpointer.save writes the checkpoint with `open(final_name, "wb")` and then
rewrites `last_checkpoint` with `open(..., "w")`: a process killed during the first write
leaves a partial `model_XXXXXXX.pth` under its final name (a later --eval-only or a rerun
overwriting model_final.pth may pick it up), and one killed during the second leaves an empty
`last_checkpoint`, which --resume then turns into a path to the output directory itself.

`AtomicCheckpointer` also names the file and the fix when a checkpoint to load is missing,
truncated or no checkpoint, lets --resume fall back to the newest readable checkpoint when the
one `last_checkpoint` names is unreadable, and names the directory when a write fails (a full
disk).

`BestCheckpointer` keeps `model_best.pth`, the weights of the best periodic evaluation, across
--resume too.
"""

import contextlib
import glob
import logging
import os
import re
from collections.abc import Mapping

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.evaluation.testing import flatten_results_dict
from torch.nn.parallel import DistributedDataParallel

from ..curves import metric_curves

__all__ = ["AtomicCheckpointer", "BestCheckpointer", "CheckpointReadError", "atomic_open"]

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


class CheckpointReadError(OSError):
    """A checkpoint to load is missing, truncated or no checkpoint."""


# The checkpoints --resume may fall back to: the periodic ones and the final one, not model_best.
_RESUMABLE = re.compile(r"model_(\d{7}|final)\.pth")


def _unreadable(filename, error):
    """The CheckpointReadError for a file that torch.load or pickle could not read."""
    with open(filename, "rb") as f:
        head = f.read(4)
    if not head:
        problem = "is empty"
    elif head == b"PK\x03\x04":  # PyTorch's zip format
        problem = "is truncated or corrupt"
    else:
        problem = "is truncated or not a PyTorch/Detectron2 checkpoint"
    detail = (str(error).strip().splitlines() or [""])[0][:200]
    return CheckpointReadError(
        f"Checkpoint {filename!r} {problem} ({type(error).__name__}: {detail})"
    )


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose checkpoint files and `last_checkpoint` tag are written to a
    temporary file, fsynced and renamed into place, and which

    - refuses to save weights that hold NaN or inf (the last good checkpoint stays the one
      --resume picks);
    - raises an OSError naming the directory when a write fails (ENOSPC: a full disk), with the
      previous checkpoint and `last_checkpoint` left as they were;
    - raises :class:`CheckpointReadError` naming the file and the fix for a missing, truncated or
      non-checkpoint file (MODEL.WEIGHTS, or a checkpoint met by --resume);
    - on --resume falls back from an unreadable checkpoint to the newest readable
      `model_NNNNNNN.pth` / `model_final.pth` with a warning, and refuses to start from scratch
      when the directory holds checkpoints but none is readable.
    """

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = _AtomicLocalWrites(self.path_manager)

    def save(self, name, **kwargs):
        if not (self.save_dir and self.save_to_disk):
            return
        floats = {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}
        finite = torch.stack([v.isfinite().all() for v in floats.values()]).tolist()  # one sync
        bad = [k for k, ok in zip(floats, finite) if not ok]
        last_good = self.get_checkpoint_file() or "(none)"
        if bad:
            raise FloatingPointError(
                f"Not saving checkpoint {name}: the model holds NaN/inf in {', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}. The last good checkpoint is {last_good}."
            )
        try:
            super().save(name, **kwargs)
        except Exception as e:
            # torch.save reports a failed write (ENOSPC) as the RuntimeError of closing its zip
            # writer, with the OSError as its context.
            error = e if isinstance(e, OSError) else e.__context__
            if not isinstance(error, OSError):
                raise
            raise OSError(
                error.errno,
                f"Cannot write checkpoint {name}.pth in {os.path.abspath(self.save_dir)}: "
                f"{error.strerror or error}. last_checkpoint still names {last_good}: free space there "
                "(or move OUTPUT_DIR to another disk), then rerun with --resume",
            ) from e

    def load(self, path, *args, **kwargs):
        # Local files ("file.pth?matching_heuristics=True" is file.pth); with a DDP model
        # DetectionCheckpointer checks the file on every process (it may be on rank 0 only).
        if path and "://" not in path and not isinstance(self.model, DistributedDataParallel):
            if not os.path.isfile(path.split("?")[0]):
                raise CheckpointReadError(f"Checkpoint {path!r} does not exist")
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._parsed_url_during_load = None  # DetectionCheckpointer resets it only on success

    def _torch_load(self, f):
        checkpoint = super()._torch_load(f)
        if not isinstance(checkpoint, Mapping):
            raise CheckpointReadError(
                f"File {f!r} is not a checkpoint: it holds a {type(checkpoint).__name__}"
            )
        return checkpoint

    def _load_file(self, filename):
        try:
            checkpoint = super()._load_file(filename)
        except CheckpointReadError:
            raise
        except Exception as e:
            raise _unreadable(filename, e) from e
        weights = checkpoint["model"]
        values = weights.values() if isinstance(weights, Mapping) else [weights]
        kinds = sorted(
            {type(v).__name__ for v in values if not isinstance(v, (torch.Tensor, np.ndarray))}
        )
        if kinds:
            raise CheckpointReadError(
                f"File {filename!r} is not a checkpoint: its weights are {', '.join(kinds)}, not tensors"
            )
        return checkpoint

    def has_checkpoint(self):
        """Whether the directory has `last_checkpoint` or a checkpoint --resume can fall back to."""
        return super().has_checkpoint() or bool(self._resumable_files())

    def _resumable_files(self):
        """model_final.pth, then model_NNNNNNN.pth from the newest."""
        if not (self.save_dir and os.path.isdir(self.save_dir)):
            return []
        names = [f for f in os.listdir(self.save_dir) if _RESUMABLE.fullmatch(f)]
        names.sort(key=lambda f: (f == "model_final.pth", f), reverse=True)
        return [os.path.join(self.save_dir, f) for f in names]

    def resume_or_load(self, path, *, resume=True):
        if not (resume and self.has_checkpoint()):
            try:
                return self.load(path, checkpointables=[])
            except OSError as e:
                raise CheckpointReadError(
                    f"MODEL.WEIGHTS: {e}. Point MODEL.WEIGHTS to a complete checkpoint (a .pth of train_net.py or "
                    "Detectron2, a Detectron2 .pkl, a detectron2:// or shapes-pretrained:// path), or copy or "
                    "download the file again"
                ) from e
        tagged = self.get_checkpoint_file() if super().has_checkpoint() else None
        candidates = ([tagged] if tagged else []) + [
            f for f in self._resumable_files() if f != tagged
        ]
        failures = (
            [] if tagged else [f"{os.path.join(self.save_dir, 'last_checkpoint')} is missing"]
        )
        for candidate in candidates:
            try:
                checkpoint = self.load(candidate)
            except OSError as e:
                failures.append(str(e))
                continue
            if failures:
                logger.warning(
                    f"--resume: {'; '.join(failures)}. Resumed from {candidate}, the newest readable checkpoint."
                )
            return checkpoint
        raise CheckpointReadError(
            f"--resume: no readable checkpoint in {self.save_dir}: {'; '.join(failures)}. Copy a complete "
            "checkpoint there (and its name into last_checkpoint), or train without --resume in a new OUTPUT_DIR"
        )


class BestCheckpointer(hooks.BestCheckpointer):
    """
    Detectron2's BestCheckpointer (saves `<file_prefix>.pth` when an evaluation beats the best so
    far; register it after the EvalHook), which also

    - on a resumed run starts from the evaluation an existing model_best.pth holds (its iteration,
      that evaluation's value in metrics.json), so a worse evaluation after --resume does not
      replace it (Detectron2's hook forgets its best when the process restarts);
    - stops at the first evaluation that lacks the metric, naming the results there are
      (Detectron2's hook only warns, and never saves);
    - leaves `last_checkpoint` on the last periodic checkpoint, which --resume and --eval-only
      --resume read (saving model_best.pth would point it there).
    """

    def __init__(self, eval_period, checkpointer, val_metric, mode="max", file_prefix="model_best"):
        super().__init__(eval_period, checkpointer, val_metric, mode, file_prefix)
        self._mode = mode

    def before_train(self):
        output_dir = self._checkpointer.save_dir
        best_file = os.path.join(output_dir, f"{self._file_prefix}.pth")
        if not self.trainer.start_iter or not os.path.isfile(best_file):
            return
        # The evaluation model_best.pth holds: its iteration, and that evaluation's value.
        iteration = torch.load(best_file, map_location="cpu", mmap=True, weights_only=False)[
            "iteration"
        ]
        curve = []
        if os.path.isfile(os.path.join(output_dir, "metrics.json")):
            curve = metric_curves(output_dir, self._val_metric).get(self._val_metric, [])
        value = dict(curve).get(iteration + 1)  # metric_curves counts iterations trained
        if value is None or not self._update_best(value, iteration):
            self._logger.warning(
                f"metrics.json has no finite {self._val_metric} at iteration {iteration}, the evaluation "
                f"{best_file} holds: the first evaluation of this run replaces it"
            )
            return
        self._logger.info(
            f"Resumed the best {self._val_metric}: {value:0.5f} @ iteration {iteration} ({best_file})"
        )

    def _best_checking(self):
        if self._val_metric not in self.trainer.storage.latest():
            results = flatten_results_dict(getattr(self.trainer, "_last_eval_results", {}))
            raise ValueError(
                f"TEST.BEST_CHECKPOINT_METRIC {self._val_metric!r} is not among this evaluation's results "
                f"{sorted(results)}: set it to one of them"
            )
        last = self._checkpointer.get_checkpoint_file()
        super()._best_checking()
        if last and self._checkpointer.get_checkpoint_file() != last:
            self._checkpointer.tag_last_checkpoint(os.path.basename(last))
