"""Preemption: SIGTERM or SIGUSR1 stops training after the current iteration, with a checkpoint.

Clusters stop jobs with SIGTERM (SLURM preemption and scancel, Kubernetes pod deletion) and
SLURM sends SIGUSR1 ahead of the time limit (`#SBATCH --signal=USR1@120`). The signal handler
only records the signal; :class:`PreemptionHook`, after each iteration, lets the processes agree
whether any of them got one, rank 0 saves `model_{iter:07d}.pth` (last_checkpoint names it) and
every process exits with :data:`PREEMPTED_EXIT_CODE`; `--resume` continues at the next iteration.
"""

import logging
import multiprocessing
import os
import signal
import time

import detectron2.utils.comm as comm
import torch
import torch.distributed as dist
from detectron2.engine import HookBase

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "PREEMPTION_SIGNALS",
    "PreemptionHook",
    "forward_signals_to_children",
]

# Exit code of every process after a checkpoint on a preemption signal (128 + SIGTERM, for
# SIGUSR1 too): "stopped early, the checkpoint is saved, rerun with --resume".
PREEMPTED_EXIT_CODE = 143
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

logger = logging.getLogger(__name__)


class PreemptionHook(HookBase):
    """Stops training after the iteration in which any process received SIGTERM or SIGUSR1: rank
    0 saves a checkpoint of that iteration through `checkpointer`, then every process raises
    SystemExit(PREEMPTED_EXIT_CODE). Register it last, so that the other hooks (learning-rate
    schedule, periodic checkpoint, evaluation, writers) finish that iteration first.

    In multi-process runs the processes all_reduce the flag over gloo after every iteration, so
    they stop at the same one. After the last iteration the signals get their default action
    back: the run is complete (model_final.pth) and only the final evaluation is left.
    """

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer
        self._received = None  # (signal, time.monotonic()) of the first signal
        self._previous_handlers = {}
        self._group = None

    def _record(self, signum, frame):
        if self._received is None:
            self._received = (signal.Signals(signum), time.monotonic())

    def _restore_handlers(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def before_train(self):
        self._previous_handlers = {s: signal.signal(s, self._record) for s in PREEMPTION_SIGNALS}
        if comm.get_world_size() > 1:
            self._group = dist.new_group(
                backend="gloo"
            )  # a CPU flag also on NCCL runs: no GPU sync

    def after_train(self):
        self._restore_handlers()

    def after_step(self):
        stop = torch.tensor([self._received is not None], dtype=torch.int32)
        if self._group is not None:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX, group=self._group)
        last = self.trainer.iter >= self.trainer.max_iter - 1
        if last:
            self._restore_handlers()
            if stop.item():
                logger.warning(
                    "Preemption signal during the last iteration: the run finishes (model_final.pth)"
                )
        elif stop.item():
            self._stop()

    def _stop(self):
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        if comm.is_main_process():
            self._checkpointer.save(name, iteration=iteration)
        comm.synchronize()  # no process exits before the checkpoint is complete
        if self._received:
            received = f"{self._received[0].name} received {time.monotonic() - self._received[1]:.1f} s ago"
        else:
            received = "another process received SIGTERM or SIGUSR1"
        logger.warning(
            f"Preempted ({received}): stopped after iteration {iteration}, checkpoint "
            f"{os.path.join(self._checkpointer.save_dir, name + '.pth')}. Exiting with code "
            f"{PREEMPTED_EXIT_CODE}: rerun with --resume to continue at iteration {iteration + 1}."
        )
        raise SystemExit(PREEMPTED_EXIT_CODE)


def forward_signals_to_children(signum, frame):
    """Signal handler of a launching process: passes `signum` on to the processes it started."""
    for child in multiprocessing.active_children():
        os.kill(child.pid, signum)
