"""Data shared by every model: the embedded shapes dataset, dataset registration (shapes, users'
COCO-format files, the datasets a config names) and the training mapper with its box checks."""

from .datasets import (
    DatasetFormatError,
    register_coco_dataset,
    register_datasets,
    register_shapes,
    validate_coco_detection_json,
)
from .mapper import CheckedDatasetMapper, sanitize_boxes
from .shapes import SHAPES_CLASSES, ensure_shapes

__all__ = [
    "DatasetFormatError",
    "register_coco_dataset",
    "register_datasets",
    "register_shapes",
    "validate_coco_detection_json",
    "CheckedDatasetMapper",
    "sanitize_boxes",
    "SHAPES_CLASSES",
    "ensure_shapes",
]
