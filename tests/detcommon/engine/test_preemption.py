"""Preemption: SIGTERM or SIGUSR1 during training (one process, and two over gloo, signalled
through the launching process or on one rank only) stops every process after the current
iteration with a checkpoint of it and exit code 143; --resume continues at the next iteration
with the learning rate an uninterrupted run has there."""

import json
import os
import signal
import sys

import pytest
import torch

from detcommon.engine.preemption import PREEMPTED_EXIT_CODE
from tests.conftest import TINY_OPTS, PausedRun, run_train_net, torchrun_command

CONFIG = "configs/shapes/dh_ext.yaml"
# Periodic checkpoints after iterations 1, 3, 5; the learning rate drops tenfold at 3 and at 5.
SCHEDULE = ["SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(3, 5)", "DATASETS.TEST", "()"]
PAUSE_AT = 4  # the signal arrives during iteration 4: checkpoint model_0000004, resume at 5


def _signal_during_iteration(
    site_dir, out, signum, num_gpus=1, target="launcher", pause_at=PAUSE_AT, torchrun=False
):
    """Runs train_net.py (with `--num-gpus num_gpus`, or under torchrun with that many processes),
    sends `signum` to `target` ("launcher" or a rank) while every rank waits before iteration
    `pause_at`; returns (exit code, launcher output, seconds from signal to exit)."""
    if torchrun:
        launcher = [*torchrun_command(num_gpus), "train_net.py"]
    else:
        launcher = [sys.executable, "train_net.py", "--num-gpus", str(num_gpus)]
    command = [
        *launcher,
        "--config-file",
        CONFIG,
        *TINY_OPTS,
        *SCHEDULE,
        "OUTPUT_DIR",
        out,
    ]
    with PausedRun(site_dir, out, [command], num_gpus, pause_at) as run:
        os.kill(run.launcher_pid() if target == "launcher" else run.rank_pid(target), signum)
        run.release()
        [(code, log)], seconds = run.wait()
    return code, log, seconds


def _rows(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return {row["iteration"]: row for row in map(json.loads, f) if "lr" in row}


def _last_checkpoint(out):
    with open(os.path.join(out, "last_checkpoint")) as f:
        return f.read()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """metrics.json rows (by iteration) of the same run without a signal."""
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    code, log = run_train_net("--config-file", CONFIG, *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out)
    assert code == 0, log[-3000:]
    return _rows(out)


def _check_stopped_and_resume(out, log, num_gpus, uninterrupted):
    """The run stopped after PAUSE_AT with its checkpoint; --resume runs the last iteration."""
    assert _last_checkpoint(out) == f"model_{PAUSE_AT:07d}.pth"
    checkpoint = torch.load(os.path.join(out, f"model_{PAUSE_AT:07d}.pth"), weights_only=False)
    assert checkpoint["iteration"] == PAUSE_AT
    assert (
        checkpoint["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == PAUSE_AT + 1
    )  # where 5 starts
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    assert _rows(out)[PAUSE_AT]["lr"] == pytest.approx(0.002)  # written when the run stopped
    for rank in range(num_gpus):
        with open(os.path.join(out, "log.txt" + (f".rank{rank}" if rank else ""))) as f:
            assert f"stopped after iteration {PAUSE_AT}" in f.read(), rank
    code, log = run_train_net(
        "--config-file",
        CONFIG,
        "--num-gpus",
        str(num_gpus),
        "--resume",
        *TINY_OPTS,
        *SCHEDULE,
        "OUTPUT_DIR",
        out,
    )
    assert code == 0, log[-3000:]
    assert f"Starting training from iteration {PAUSE_AT + 1}" in log
    resumed = _rows(out)[PAUSE_AT + 1]
    assert (
        resumed["lr"] == pytest.approx(uninterrupted[PAUSE_AT + 1]["lr"]) == pytest.approx(0.0002)
    )
    assert _last_checkpoint(out) == "model_final.pth"


def test_sigterm_checkpoints_the_iteration_and_resume_continues(site_dir, tmp_path, uninterrupted):
    out = str(tmp_path)
    code, log, seconds = _signal_during_iteration(site_dir, out, signal.SIGTERM)
    assert code == PREEMPTED_EXIT_CODE, log[-3000:]
    assert "Preempted (SIGTERM received" in log
    print(f"single process: SIGTERM to exit {seconds:.1f} s")
    _check_stopped_and_resume(out, log, 1, uninterrupted)


def test_sigterm_to_the_launcher_stops_both_ranks_at_the_same_iteration(
    site_dir, tmp_path, uninterrupted
):
    out = str(tmp_path)
    code, log, seconds = _signal_during_iteration(site_dir, out, signal.SIGTERM, num_gpus=2)
    assert code == PREEMPTED_EXIT_CODE, log[-3000:]
    print(f"2 processes, SIGTERM to the launcher: exit after {seconds:.1f} s")
    _check_stopped_and_resume(out, log, 2, uninterrupted)


def test_sigterm_to_torchrun_stops_both_ranks_with_a_checkpoint(site_dir, tmp_path, uninterrupted):
    """torchrun's agent passes SIGTERM on to its workers, which stop as above; torchrun itself
    then exits with its own code for a signal (1), not 143."""
    out = str(tmp_path)
    code, log, seconds = _signal_during_iteration(
        site_dir, out, signal.SIGTERM, num_gpus=2, torchrun=True
    )
    assert code == 1 and "SignalException" in log, log[-3000:]
    print(f"torchrun, 2 processes, SIGTERM to torchrun: exit after {seconds:.1f} s")
    _check_stopped_and_resume(out, log, 2, uninterrupted)


def test_sigusr1_on_one_rank_stops_both(site_dir, tmp_path):
    """Only rank 1 gets the signal: rank 0 learns it from the all_reduce and saves."""
    out = str(tmp_path)
    code, log, seconds = _signal_during_iteration(
        site_dir, out, signal.SIGUSR1, num_gpus=2, target=1
    )
    assert code == PREEMPTED_EXIT_CODE, log[-3000:]
    print(f"2 processes, SIGUSR1 to rank 1: exit after {seconds:.1f} s")
    assert "Preempted (another process received SIGTERM or SIGUSR1)" in log  # rank 0's log
    with open(os.path.join(out, "log.txt.rank1")) as f:
        assert "Preempted (SIGUSR1 received" in f.read()
    assert _last_checkpoint(out) == f"model_{PAUSE_AT:07d}.pth"


def test_a_signal_in_the_last_iteration_lets_the_run_finish(site_dir, tmp_path):
    out = str(tmp_path)
    code, log, _ = _signal_during_iteration(site_dir, out, signal.SIGTERM, pause_at=5)
    assert code == 0, log[-3000:]
    assert "Preemption signal during the last iteration: the run finishes" in log
    assert _last_checkpoint(out) == "model_final.pth"
