"""Training-side pieces shared by every model: dataset checks and a CPU-aware DDP wrapper."""
import contextlib
import logging
from unittest import mock

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import defaults

from .datasets import DatasetFormatError, register_coco_dataset, register_shapes

__all__ = ["register_datasets", "cpu_ddp_without_device_ids", "check_amp_device"]

logger = logging.getLogger(__name__)


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


def check_amp_device(cfg):
    """Refuses SOLVER.AMP.ENABLED on a CPU model before anything is built: Detectron2's
    AMPTrainer runs torch.cuda.amp and would stop at the first iteration."""
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
        raise ValueError(
            "SOLVER.AMP.ENABLED True needs CUDA (Detectron2's AMPTrainer uses torch.cuda.amp, float16), "
            "but this run is on the CPU (MODEL.DEVICE cpu). Set SOLVER.AMP.ENABLED False, or train on a GPU."
        )


def _create_ddp_model(model, **kwargs):
    """Detectron2's create_ddp_model, minus `device_ids` for a CPU model (DDP rejects them)."""
    if next(model.parameters()).device.type == "cpu" and comm.get_world_size() > 1:
        kwargs["device_ids"] = None
        logger.info(f"Training on CPU with DistributedDataParallel over {comm.get_world_size()} gloo processes")
    return _D2_CREATE_DDP_MODEL(model, **kwargs)


_D2_CREATE_DDP_MODEL = defaults.create_ddp_model


@contextlib.contextmanager
def cpu_ddp_without_device_ids():
    """Within this context DefaultTrainer can wrap a CPU model in DDP (gloo workers)."""
    with mock.patch.object(defaults, "create_ddp_model", _create_ddp_model):
        yield

