"""Starting the processes of a run: Detectron2's `launch` (`--num-gpus`, `--num-machines`) or
torchrun, with preemption signals forwarded and a lost rank detected.

    python train_net.py --num-gpus 2 ...                       # spawns 2 processes
    torchrun --nproc_per_node 2 train_net.py ...               # torchrun started them
    python train_net.py --num-gpus 2 --num-machines 2 --machine-rank 0 --dist-url tcp://host0:29500 ...

Either way every process runs `main_func(*args)` in one process group (NCCL on GPUs, gloo on
CPUs) with Detectron2's local process group, under a :class:`~detcommon.engine.watchdog.PeerWatchdog`.
"""

import functools
import os
import signal
import sys
import time

import detectron2.utils.comm as comm
import torch
import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from torch.multiprocessing import ProcessExitedException

from .preemption import PREEMPTED_EXIT_CODE, PREEMPTION_SIGNALS, forward_signals_to_children
from .watchdog import LOST_RANK_EXIT_CODE, PeerWatchdog, default_store

__all__ = ["launch", "torchrun_environment", "WATCHDOG_TIMEOUT_ENV"]

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
# Seconds without a heartbeat before a rank counts as lost (default 45).
WATCHDOG_TIMEOUT_ENV = "DETCOMMON_LOST_RANK_TIMEOUT"


def torchrun_environment():
    """(rank, local rank, world size, local world size) when torchrun (or another launcher that
    sets RANK, LOCAL_RANK and WORLD_SIZE) started this process, else None."""
    if not all(v in os.environ for v in TORCHRUN_VARIABLES):
        return None
    rank, local_rank, world_size = (int(os.environ[v]) for v in TORCHRUN_VARIABLES)
    return rank, local_rank, world_size, int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def _is_collective_error(e):
    """Whether `e` came out of a collective (gloo or NCCL), as when a peer process died."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        s in text for s in ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer")
    )


def _watched(main_func, *args):
    """`main_func(*args)` in one process of a multi-process run, under a PeerWatchdog."""
    timeout = float(os.environ.get(WATCHDOG_TIMEOUT_ENV, 45))
    watchdog = PeerWatchdog(
        default_store(),
        comm.get_rank(),
        comm.get_world_size(),
        interval=min(5.0, timeout / 3),
        timeout=timeout,
    ).start()
    try:
        result = main_func(*args)
    except Exception as e:
        if _is_collective_error(e):
            # Most likely another rank died: let the watchdog name it (it ends this process), and
            # raise the collective's own error only if every rank is still there.
            watchdog.check_now()
            time.sleep(watchdog.timeout + 2 * watchdog.interval)
        watchdog.stop(f"failed: {type(e).__name__}: {str(e)[:200]}")
        raise
    except SystemExit as e:
        watchdog.stop(
            "preempted" if e.code == PREEMPTED_EXIT_CODE else f"failed: exit code {e.code}"
        )
        raise
    except BaseException as e:  # KeyboardInterrupt
        watchdog.stop(f"failed: {type(e).__name__}")
        raise
    watchdog.stop("done")
    return result


def _torchrun_worker(main_func, args, environment):
    rank, local_rank, world_size, local_world_size = environment
    if world_size == 1:
        return main_func(*args)
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if has_gpu else "gloo", init_method="env://", rank=rank, world_size=world_size,
        timeout=DEFAULT_TIMEOUT,
    )  # fmt: skip
    comm.create_local_process_group(local_world_size)
    comm.synchronize()
    return _watched(main_func, *args)


def _lost_process_message(e, num_gpus_per_machine, machine_rank):
    rank = machine_rank * num_gpus_per_machine + e.error_index
    if e.exit_code == LOST_RANK_EXIT_CODE:
        what = f"Rank {rank} (pid {e.error_pid}) stopped because it lost another rank (its log names which)"
    else:
        what = (
            f"Lost rank {rank}: its training process (pid {e.error_pid}) was killed by {e.signal_name}"
            + (
                " (kill -9, or the out-of-memory killer: see `dmesg`)"
                if e.signal_name == "SIGKILL"
                else ""
            )
        )
    return (
        f"{what}; the other processes of this machine were stopped. Exiting with code "
        f"{LOST_RANK_EXIT_CODE}: the checkpoints are intact, rerun with --resume to continue from the last one."
    )


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=()):
    """Runs `main_func(*args)` in every process of the run.

    Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE set) this process is one of them: it joins the
    process group over env:// (MASTER_ADDR, MASTER_PORT). Otherwise Detectron2's `launch` starts
    `num_gpus_per_machine` processes on this machine; its process then forwards SIGTERM and
    SIGUSR1 to them and exits with PREEMPTED_EXIT_CODE when they did, and with LOST_RANK_EXIT_CODE
    (naming the rank) when one of them was killed or lost another rank.
    """
    environment = torchrun_environment()
    if environment is not None:
        if num_gpus_per_machine != 1 or num_machines != 1 or machine_rank != 0:
            raise ValueError(
                f"torchrun started this process (RANK={environment[0]}, WORLD_SIZE={environment[2]}): it "
                f"cannot also start processes (--num-gpus {num_gpus_per_machine}, --num-machines "
                f"{num_machines}, --machine-rank {machine_rank}). Either drop those options and let "
                "torchrun start the processes (`torchrun --nproc_per_node N --nnodes M ...`), or run "
                "`python train_net.py --num-gpus N ...` without torchrun."
            )
        return _torchrun_worker(main_func, args, environment)
    if num_gpus_per_machine * num_machines == 1:
        return d2_launch(main_func, 1, 1, args=args)
    previous = {s: signal.signal(s, forward_signals_to_children) for s in PREEMPTION_SIGNALS}
    try:
        return d2_launch(
            functools.partial(_watched, main_func), num_gpus_per_machine, num_machines,
            machine_rank=machine_rank, dist_url=dist_url, args=args,
        )  # fmt: skip
    except ProcessExitedException as e:
        if e.exit_code == PREEMPTED_EXIT_CODE:
            sys.exit(PREEMPTED_EXIT_CODE)
        if e.signal_name is None and e.exit_code != LOST_RANK_EXIT_CODE:
            raise
        print(
            f"ERROR: {_lost_process_message(e, num_gpus_per_machine, machine_rank)}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(LOST_RANK_EXIT_CODE)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
