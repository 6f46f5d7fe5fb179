"""Training-side pieces shared by every model: preparing a run (logging, datasets), the
weights check of an evaluation, and a CPU-aware DDP wrapper."""

import argparse
import contextlib
import logging
import os
from unittest import mock

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_setup, defaults
from detectron2.utils.logger import setup_logger

from .datasets import DatasetFormatError, register_coco_dataset, register_shapes
from .projects import package_names

__all__ = [
    "setup_run", "register_datasets", "check_weights_for_eval", "cpu_ddp_without_device_ids", "check_amp_device",
]  # fmt: skip

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


def register_datasets(cfg):
    """Registers the datasets a config needs and checks them before anything trains
    (DATASETS.REGISTER_COCO's entries are checked in shape by validate_config first).

    Raises ValueError when a dataset of DATASETS.TRAIN/TEST is unknown, and when the number of
    classes of a dataset differs from MODEL.ROI_HEADS.NUM_CLASSES.
    """
    register_shapes(cfg.DATASETS.SHAPES_ROOT or None)
    for entry in cfg.DATASETS.REGISTER_COCO:
        try:
            register_coco_dataset(*entry)
        except DatasetFormatError as e:
            raise DatasetFormatError(f"DATASETS.REGISTER_COCO (--dataset) {entry[0]!r}: {e}") from e
    known = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in known:
                raise ValueError(
                    f"DATASETS.{key} names {name!r}, which is not registered. Register a COCO-format "
                    "dataset with `--dataset NAME JSON_FILE IMAGE_DIR` (or DATASETS.REGISTER_COCO)."
                )
            classes = MetadataCatalog.get(name).get("thing_classes")
            if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
                raise ValueError(
                    f"Dataset {name!r} has {len(classes)} classes but MODEL.ROI_HEADS.NUM_CLASSES is "
                    f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}: add `MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}`."
                )


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
