"""Crash-safe checkpoints: a file appears under its final name only once it is complete.

fvcore's Checkpointer.save writes the checkpoint with `open(final_name, "wb")` and then
rewrites `last_checkpoint` with `open(..., "w")`: a process killed during the first write
leaves a partial `model_XXXXXXX.pth` under its final name (a later --eval-only or a rerun
overwriting model_final.pth may pick it up), and one killed during the second leaves an empty
`last_checkpoint`, which --resume then turns into a path to the output directory itself.

`BestCheckpointer` keeps `model_best.pth`, the weights of the best periodic evaluation, across
--resume too.
"""
import contextlib
import glob
import logging
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.evaluation.testing import flatten_results_dict

from .curves import metric_curves

__all__ = ["AtomicCheckpointer", "BestCheckpointer", "atomic_open"]

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
        iteration = torch.load(best_file, map_location="cpu", mmap=True, weights_only=False)["iteration"]
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
        self._logger.info(f"Resumed the best {self._val_metric}: {value:0.5f} @ iteration {iteration} ({best_file})")

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
