"""Training-side pieces shared by every model: preparing a run (logging, datasets), the
weights check of an evaluation, the mixed-precision device check, and a CPU-aware DDP wrapper."""

import argparse
import contextlib
import logging
import os
from unittest import mock

import detectron2.utils.comm as comm
from detectron2.engine import default_setup, defaults
from detectron2.utils.logger import setup_logger

from ..data.datasets import register_datasets
from ..projects import package_names

__all__ = ["setup_run", "check_weights_for_eval", "cpu_ddp_without_device_ids", "check_amp_device"]

logger = logging.getLogger(__name__)


def setup_run(cfg, args=None):
    """Prepares this process for a run of the frozen `cfg` (detcommon.config.build_config):
    Detectron2's default_setup (OUTPUT_DIR, its config.yaml, seeds, the `detectron2` logger, which
    logs `args`, the command line of train_net.py; tools pass none), a logger per project package,
    then the datasets."""
    default_setup(cfg, args if args is not None else argparse.Namespace())
    for package in package_names():
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=package)
    register_datasets(cfg)


def check_weights_for_eval(weights, key="MODEL.WEIGHTS"):
    """Refuses empty or missing weights of an evaluation (`key`: the config key that gave them,
    MODEL.WEIGHTS or a LazyConfig's train.init_checkpoint): evaluating random weights is never meant."""
    if not weights:
        assign = "=" if key.islower() else " "  # a LazyConfig override, or a YAML KEY VALUE pair
        raise ValueError(
            f"--eval-only needs trained weights: pass {key}{assign}path/to/model_final.pth"
        )
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"{key} {weights!r} does not exist; nothing to evaluate.")


def check_amp_device(enabled, device, key="SOLVER.AMP.ENABLED"):
    """Refuses mixed precision (`key`, enabled) on a CPU `device` before anything is built:
    Detectron2's AMPTrainer runs torch.cuda.amp and would stop at the first iteration."""
    if enabled and device == "cpu":
        on, off = (
            (f"{key}=True", f"{key}=False") if key.islower() else (f"{key} True", f"{key} False")
        )
        raise ValueError(
            f"{on} needs CUDA (Detectron2's AMPTrainer uses torch.cuda.amp, float16), but this run is "
            f"on the CPU. Set {off}, or train on a GPU."
        )


def _create_ddp_model(model, **kwargs):
    """Detectron2's create_ddp_model, minus `device_ids` for a CPU model (DDP rejects them)."""
    if next(model.parameters()).device.type == "cpu" and comm.get_world_size() > 1:
        kwargs["device_ids"] = None
        logger.info(
            f"Training on CPU with DistributedDataParallel over {comm.get_world_size()} gloo processes"
        )
    return _D2_CREATE_DDP_MODEL(model, **kwargs)


_D2_CREATE_DDP_MODEL = defaults.create_ddp_model


@contextlib.contextmanager
def cpu_ddp_without_device_ids():
    """Within this context DefaultTrainer can wrap a CPU model in DDP (gloo workers)."""
    with mock.patch.object(defaults, "create_ddp_model", _create_ddp_model):
        yield
