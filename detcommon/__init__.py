"""Pieces every model of this project shares: the embedded shapes dataset, user dataset
registration, COCO evaluation with the papers' AP columns, the pretrained shapes backbone, and
trainer helpers."""

from .config import add_common_config
from .data.datasets import register_coco_dataset, register_shapes, validate_coco_detection_json
from .data.shapes import SHAPES_CLASSES, ensure_shapes
from .evaluation import PaperCOCOEvaluator
from .pretrain import ensure_pretrained  # also registers shapes-pretrained:// with PathManager

register_shapes()

__all__ = [
    "add_common_config",
    "register_coco_dataset",
    "register_shapes",
    "validate_coco_detection_json",
    "PaperCOCOEvaluator",
    "ensure_pretrained",
    "SHAPES_CLASSES",
    "ensure_shapes",
]
