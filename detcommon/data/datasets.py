"""Dataset registration: the embedded shapes splits, users' own COCO-format datasets, and the
datasets a config names (registered and checked before a run)."""

import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .mapper import sanitize_boxes
from .shapes import SHAPES_CLASSES, SPLITS, default_cache_root, ensure_shapes

__all__ = [
    "register_shapes",
    "register_coco_dataset",
    "validate_coco_detection_json",
    "DatasetFormatError",
    "register_datasets",
]

logger = logging.getLogger(__name__)

# Distinct colours for the Visualizer, one per shapes class (RGB).
_SHAPES_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


class DatasetFormatError(ValueError):
    """A dataset file is missing, unreadable, or not in COCO detection format."""


def _load_shapes(name, root):
    split_dir = ensure_shapes(name, root)
    dicts = load_coco_json(
        os.path.join(split_dir, "annotations.json"), os.path.join(split_dir, "images"), name
    )
    return sanitize_boxes(dicts, name)


def register_shapes(root=None):
    """Registers `shapes_train` and `shapes_val`; images are generated on first use under `root`
    (default: :func:`detcommon.data.shapes.default_cache_root`, read when the data is first loaded)."""
    for name in SPLITS:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        split_dir = os.path.join(root or default_cache_root(), name)
        DatasetCatalog.register(name, lambda name=name: _load_shapes(name, root))
        MetadataCatalog.get(name).set(
            json_file=os.path.join(split_dir, "annotations.json"),
            image_root=os.path.join(split_dir, "images"),
            evaluator_type="coco",
            thing_classes=list(SHAPES_CLASSES),
            thing_colors=list(_SHAPES_COLORS),
        )


def validate_coco_detection_json(json_file, image_root):
    """Checks that `json_file` is a readable COCO detection file and `image_root` a directory.

    Returns the category names sorted by id. Raises DatasetFormatError naming the problem.
    """
    if not os.path.isfile(json_file):
        raise DatasetFormatError(f"Annotation file {json_file!r} does not exist.")
    if not os.path.isdir(image_root):
        raise DatasetFormatError(f"Image directory {image_root!r} does not exist.")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetFormatError(f"Cannot read {json_file!r} as JSON: {e}") from e
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{json_file!r} is not COCO format: top level is not an object.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetFormatError(
                f"{json_file!r} is not COCO detection format: no list '{key}' at the top level."
            )
    required = {
        "images": ("id", "file_name", "height", "width"),
        "annotations": ("id", "image_id", "category_id", "bbox"),
        "categories": ("id", "name"),
    }
    for key, fields in required.items():
        for i, item in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise DatasetFormatError(f"{json_file!r}: {key}[{i}] lacks {', '.join(missing)}.")
    if not data["images"]:
        raise DatasetFormatError(f"{json_file!r} lists no images.")
    if not data["categories"]:
        raise DatasetFormatError(f"{json_file!r} lists no categories.")
    image_ids = {im["id"] for im in data["images"]}
    category_ids = {c["id"] for c in data["categories"]}
    for i, ann in enumerate(data["annotations"]):
        bbox = ann["bbox"]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)
        ):
            raise DatasetFormatError(
                f"{json_file!r}: annotations[{i}].bbox is not [x, y, w, h]: {bbox!r}."
            )
        if ann["image_id"] not in image_ids:
            raise DatasetFormatError(
                f"{json_file!r}: annotations[{i}] refers to unknown image {ann['image_id']}."
            )
        if ann["category_id"] not in category_ids:
            raise DatasetFormatError(
                f"{json_file!r}: annotations[{i}] refers to unknown category {ann['category_id']}."
            )
    return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]


def register_coco_dataset(name, json_file, image_root):
    """Validates and registers a user's COCO-format detection dataset under `name`.

    Returns its class names. Re-registering the same name with the same files is a no-op.
    """
    classes = validate_coco_detection_json(json_file, image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return classes
        raise DatasetFormatError(f"Dataset name {name!r} is already registered with other files.")
    DatasetCatalog.register(
        name, lambda: sanitize_boxes(load_coco_json(json_file, image_root, name), name)
    )
    # load_coco_json adds the category id mapping on first load; COCOEvaluator reads the files.
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", thing_classes=classes
    )
    logger.info(f"Registered dataset {name!r}: {len(classes)} classes from {json_file}")
    return classes


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
