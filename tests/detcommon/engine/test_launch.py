"""A lost rank and torchrun: a process of a multi-process run that is killed (kill -9) or frozen
stops the others within seconds (same machine) or DETCOMMON_LOST_RANK_TIMEOUT (a frozen or
unreachable one) with exit code 75 and a message naming the rank; torchrun mixed with
--num-gpus is refused; torchrun's own agent stops a run whose worker died. torchrun and two
local "machines" training together are checked in test_distributed.py."""

import os
import re
import signal
import sys
import threading
import time

import pytest
import torch.distributed as dist

from detcommon.engine.launch import WATCHDOG_TIMEOUT_ENV, launch, torchrun_environment
from detcommon.engine.watchdog import LOST_RANK_EXIT_CODE, PeerWatchdog, _process_identity
from tests.conftest import TINY_OPTS, PausedRun, free_port, torchrun_command

CONFIG = "configs/shapes/dh_ext.yaml"
SCHEDULE = ["SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()"]
PAUSE_AT = 4  # checkpoints after iterations 2 (and 5): the fault comes before iteration 4


class _Lost:
    """on_lost of a watchdog under test: records the message instead of ending the process."""

    def __init__(self):
        self.messages, self.event = [], threading.Event()

    def __call__(self, message):
        self.messages.append(message)
        self.event.set()


def _watchdog(store, rank=0, world_size=2, **kwargs):
    lost = _Lost()
    return PeerWatchdog(
        store, rank, world_size, interval=0.05, timeout=0.5, on_lost=lost, **kwargs
    ), lost


def test_a_peer_without_heartbeat_is_lost_after_the_timeout():
    store = dist.HashStore()
    watchdog, lost = _watchdog(store)
    peer = PeerWatchdog(store, 1, 2, interval=0.05, timeout=0.5, on_lost=_Lost()).start()
    started = time.monotonic()
    watchdog.start()
    time.sleep(1.0)
    assert not lost.messages  # the peer beats: nothing happens
    peer._stop.set()  # the peer freezes: no more heartbeats, no status
    peer._thread.join()
    frozen = time.monotonic()
    assert lost.event.wait(5)
    # Lost once no new heartbeat was seen for the 0.5 s timeout: the last one seen came up to one
    # 0.05 s interval before the freeze; the upper bound leaves room for a loaded machine.
    assert frozen - started > 1.0 and 0.4 <= time.monotonic() - frozen < 3.0
    (message,) = lost.messages
    assert message.startswith("Lost rank 1: no heartbeat for") and "rerun with --resume" in message
    watchdog.stop()


def test_a_peer_that_never_starts_is_lost():
    watchdog, lost = _watchdog(dist.HashStore(), world_size=3)
    watchdog.start()
    assert lost.event.wait(5)
    assert lost.messages[0].startswith("Lost rank 1: no heartbeat")
    watchdog.stop()


def test_a_peer_that_failed_is_named_with_its_error():
    store = dist.HashStore()
    store.set("detcommon/heartbeat/1", "failed: ValueError: bad box")
    watchdog, lost = _watchdog(store)
    watchdog.start()
    assert lost.event.wait(5)
    assert lost.messages[0].startswith(
        "Lost rank 1: it stopped with an error (ValueError: bad box)"
    )
    watchdog.stop()


@pytest.mark.parametrize("status", ["done", "preempted"])
def test_a_peer_that_finished_is_no_longer_watched(status):
    store = dist.HashStore()
    store.set("detcommon/heartbeat/1", status)
    watchdog, lost = _watchdog(store)
    watchdog.start()
    time.sleep(1.5)  # three timeouts
    watchdog.stop("done")
    assert not lost.messages
    assert store.get("detcommon/heartbeat/0") == b"done"


def test_a_gone_process_of_this_machine_is_lost_at_the_next_check():
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process
    store = dist.HashStore()
    store.set("detcommon/heartbeat/1", f"1 {_process_identity()} {child.pid}")
    lost = _Lost()
    watchdog = PeerWatchdog(store, 0, 2, interval=0.05, timeout=60, on_lost=lost)
    started = time.monotonic()
    watchdog.start()
    assert lost.event.wait(5)
    assert time.monotonic() - started < 1  # not the 60 s timeout
    assert lost.messages[0].startswith(
        f"Lost rank 1: its process (pid {child.pid}) on this machine has ended"
    )
    watchdog.stop()
    # The same pid in another PID namespace or on another machine is left to the heartbeat.
    store.set("detcommon/heartbeat/1", f"1 other-machine {child.pid}")
    watchdog, lost = _watchdog(store)
    watchdog.timeout = 60
    watchdog.start()
    time.sleep(0.5)
    watchdog.stop()
    assert not lost.messages


def test_torchrun_with_num_gpus_or_machines_is_refused(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert torchrun_environment() == (0, 0, 2, 2)
    for num_gpus, num_machines in ((2, 1), (1, 2)):
        with pytest.raises(ValueError, match="torchrun started this process .* drop those options"):
            launch(lambda: None, num_gpus, num_machines=num_machines)
    monkeypatch.delenv("RANK")
    assert torchrun_environment() is None


def _command(out, *extra):
    return [
        sys.executable,
        "train_net.py",
        "--config-file",
        CONFIG,
        *extra,
        *TINY_OPTS,
        *SCHEDULE,
        "OUTPUT_DIR",
        out,
    ]


def _two_machines(out):
    url = f"tcp://127.0.0.1:{free_port()}"
    return [
        _command(out, "--num-machines", "2", "--machine-rank", str(m), "--dist-url", url)
        for m in (0, 1)
    ]


def test_a_killed_rank_stops_the_other_within_seconds(site_dir, tmp_path):
    out = str(tmp_path)
    with PausedRun(site_dir, out, [_command(out, "--num-gpus", "2")], 2, PAUSE_AT) as run:
        os.kill(run.rank_pid(1), signal.SIGKILL)
        run.release()
        [(code, log)], seconds = run.wait()
    print(f"--num-gpus 2, kill -9 rank 1: launcher exit {code} after {seconds:.1f} s")
    assert code == LOST_RANK_EXIT_CODE, log[-3000:]
    assert "Lost rank 1: its training process" in log and "was killed by SIGKILL" in log
    assert seconds < 60
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_0000002.pth"  # the checkpoint before the fault, intact


def test_a_killed_rank_on_another_machine_is_named(site_dir, tmp_path):
    out = str(tmp_path)
    with PausedRun(site_dir, out, _two_machines(out), 2, PAUSE_AT) as run:
        os.kill(run.rank_pid(1), signal.SIGKILL)
        run.release()
        [(code0, log0), (code1, log1)], seconds = run.wait()
    print(f"2 machines, kill -9 rank 1: both launchers exited after {seconds:.1f} s")
    assert (code0, code1) == (LOST_RANK_EXIT_CODE, LOST_RANK_EXIT_CODE), log0[-3000:]
    assert "Lost rank 1: its process" in log0  # machine 0 names the rank of machine 1
    assert "Lost rank 1: its training process" in log1 and "SIGKILL" in log1
    assert seconds < 60


def test_a_frozen_rank_is_lost_after_the_heartbeat_timeout(site_dir, tmp_path):
    """SIGSTOP on rank 1 (a hung or unreachable machine): its connections stay open, no collective
    fails, and only the missing heartbeats tell rank 0."""
    out = str(tmp_path)
    commands = _two_machines(out)
    with PausedRun(site_dir, out, commands, 2, PAUSE_AT, env={WATCHDOG_TIMEOUT_ENV: "6"}) as run:
        frozen = run.rank_pid(1)
        os.kill(frozen, signal.SIGSTOP)
        run.release()
        code0 = run.procs[0].wait(timeout=120)
        seconds = time.monotonic() - run.released
        os.kill(frozen, signal.SIGKILL)
        log0 = run.output(0)
    print(f"2 machines, SIGSTOP rank 1, timeout 6 s: machine 0 exited after {seconds:.1f} s")
    assert code0 == LOST_RANK_EXIT_CODE, log0
    silence = re.search(r"Lost rank 1: no heartbeat for (\d+) s", log0)
    assert silence, log0
    # The silence counts from rank 1's last heartbeat, which came before the SIGSTOP and the
    # release, so the wall time after the release may be under the timeout; the silence may not.
    assert int(silence.group(1)) >= 6
    assert seconds < 30


def test_a_killed_torchrun_worker_stops_the_run(site_dir, tmp_path):
    out = str(tmp_path)
    command = [*torchrun_command(2), *_command(out)[1:]]
    with PausedRun(site_dir, out, [command], 2, PAUSE_AT) as run:
        os.kill(run.rank_pid(1), signal.SIGKILL)
        run.release()
        [(code, log)], seconds = run.wait()
    print(f"torchrun, kill -9 rank 1: torchrun exit {code} after {seconds:.1f} s")
    assert code != 0 and seconds < 60, log[-3000:]
    assert "rank      : 1" in log and "Signal 9 (SIGKILL)" in log, log[
        -3000:
    ]  # torchrun's failure summary
