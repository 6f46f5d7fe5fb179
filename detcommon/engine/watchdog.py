"""A lost rank: every process of a multi-process run stops, naming the rank, when another one dies.

A process killed with SIGKILL (the out-of-memory killer, a failed node) leaves the others waiting
in their next collective: for the 30 minutes of the process group's timeout, for ever on some
NCCL versions. :class:`PeerWatchdog` runs a thread in every process that writes a heartbeat (a
counter) into the run's rendezvous store every `interval` seconds and reads the others'. A rank
whose counter has not moved for `timeout` seconds, which ended with an error, or whose store
cannot be reached (rank 0 hosts it) is reported and this process exits with
:data:`LOST_RANK_EXIT_CODE`. Counters are compared against this process's own clock only, so
the machines' clocks need not agree. A rank in the same PID namespace of the same kernel (the
processes of one machine) whose process is gone counts as lost at the next check, without
waiting for `timeout`. A rank that finished (or stopped on a preemption signal) says so and is no
longer watched.
"""

import logging
import os
import sys
import threading
import time

import torch.distributed as dist

__all__ = ["LOST_RANK_EXIT_CODE", "PeerWatchdog", "default_store"]

# Exit code of the processes that stopped because another rank was lost (EX_TEMPFAIL of
# sysexits.h: the job may succeed when retried, e.g. requeued with --resume).
LOST_RANK_EXIT_CODE = 75
_KEY = "detcommon/heartbeat/{}"
_FINISHED = ("done", "preempted")

logger = logging.getLogger(__name__)


def default_store():
    """The key-value store of the default process group (rank 0 or torchrun's agent hosts it)."""
    return dist.distributed_c10d._get_default_store()


def _process_identity():
    """What tells whether a PID names a process of this machine: kernel boot id and PID namespace."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux: no PID checks, heartbeats only
        return None


def _process_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # exited, not yet reaped
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _exit_lost(message):
    logger.error(message)
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    logging.shutdown()  # flush log.txt
    os._exit(LOST_RANK_EXIT_CODE)  # the main thread may be blocked in a collective: no unwinding


class PeerWatchdog:
    """Heartbeats of `rank` into `store` and watch of the other `world_size - 1` ranks.

    `on_lost(message)` is called once, from the watchdog's thread, when a rank is lost; by
    default it logs the message and ends this process with LOST_RANK_EXIT_CODE.
    """

    def __init__(self, store, rank, world_size, interval=5.0, timeout=45.0, on_lost=_exit_lost):
        if timeout <= interval:
            raise ValueError(
                f"PeerWatchdog: timeout ({timeout} s) must exceed the heartbeat interval ({interval} s)"
            )
        self.store, self.rank, self.world_size = store, rank, world_size
        self.interval, self.timeout, self.on_lost = interval, timeout, on_lost
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._identity = _process_identity()
        self._thread = threading.Thread(
            target=self._run, name="detcommon-peer-watchdog", daemon=True
        )

    def start(self):
        self._beat(0)
        self._thread.start()
        return self

    def check_now(self):
        """Asks for a check of the other ranks now rather than at the next interval."""
        self._wake.set()

    def stop(self, status="done"):
        """Ends the watch; `status` ("done", "preempted" or "failed: <why>") tells the other ranks
        whether this process ended on purpose."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.store.set(_KEY.format(self.rank), status)
        except Exception:  # the store's host already ended: nobody is left to tell
            pass

    def _beat(self, count):
        self.store.set(_KEY.format(self.rank), f"{count} {self._identity} {os.getpid()}")

    def _run(self):
        peers = [r for r in range(self.world_size) if r != self.rank]
        seen = {r: (None, time.monotonic()) for r in peers}  # rank -> (last value, when it changed)
        count = 0
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            count += 1
            try:
                self._beat(count)
                values = {r: self._read(r) for r in list(seen)}
            except Exception as e:  # the store lives in rank 0 (or torchrun's agent)
                if not self._stop.is_set():
                    self.on_lost(
                        f"Lost rank 0: the run's rendezvous store, which rank 0 hosts, cannot be reached "
                        f"({type(e).__name__}: {e}). Rank {self.rank} stops; rerun with --resume."
                    )
                return
            now = time.monotonic()
            for r, value in values.items():
                last, since = seen[r]
                if value in _FINISHED:
                    del seen[r]
                elif value is not None and value.startswith("failed"):
                    return self.on_lost(
                        f"Lost rank {r}: it stopped with an error ({value[len('failed: ') :]}); see its log "
                        f"(log.txt.rank{r} in OUTPUT_DIR). Rank {self.rank} stops; rerun with --resume."
                    )
                elif value is not None and self._identity and self._gone_here(value):
                    return self.on_lost(
                        f"Lost rank {r}: its process (pid {value.split()[2]}) on this machine has ended (a kill -9 "
                        f"or the out-of-memory killer?). Rank {self.rank} stops instead of waiting in a "
                        f"collective; rerun with --resume to continue from the last checkpoint."
                    )
                elif value != last:
                    seen[r] = (value, now)
                elif now - since > self.timeout:
                    return self.on_lost(
                        f"Lost rank {r}: no heartbeat for {now - since:.0f} s (the process died or its machine "
                        f"is unreachable; a kill -9 or the out-of-memory killer?). Rank {self.rank} stops "
                        f"instead of waiting in a collective; rerun with --resume to continue from the last "
                        f"checkpoint."
                    )

    def _gone_here(self, heartbeat):
        _, identity, pid = heartbeat.split()
        return identity == self._identity and _process_gone(int(pid))

    def _read(self, rank):
        key = _KEY.format(rank)
        if not self.store.check([key]):
            return None
        return self.store.get(key).decode()
