"""Bad data with clear messages: unreadable images and invalid boxes.

* :class:`CheckedDatasetMapper` names the file when an image cannot be read (missing, truncated,
  not an image); in training, with DATALOADER.SKIP_BAD_IMAGES, it skips the image with a
  warning that counts the skipped images instead.
* :func:`sanitize_boxes` runs when a dataset is loaded: boxes partly outside their image are
  clipped to it, boxes entirely outside or of non-positive width/height are dropped; one warning
  per dataset counts each kind. Images left without annotations are then handled by
  Detectron2's DATALOADER.FILTER_EMPTY_ANNOTATIONS like any other.
"""

import logging
import math

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode

__all__ = ["CheckedDatasetMapper", "sanitize_boxes"]

logger = logging.getLogger(__name__)


class CheckedDatasetMapper(DatasetMapper):
    """DatasetMapper whose unreadable images raise an OSError naming the file, or, with
    `skip_bad_images` (training only), are skipped: the mapper returns None and Detectron2's
    MapDataset draws another image."""

    @configurable
    def __init__(self, is_train, *, skip_bad_images=False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["skip_bad_images"] = is_train and cfg.DATALOADER.SKIP_BAD_IMAGES
        return ret

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:  # what PIL raises for unreadable or truncated files
            file_name = dataset_dict.get("file_name")
            if not self.skip_bad_images:
                raise OSError(
                    f"Cannot read image {file_name!r}: {e}. Fix or remove the file, or set "
                    "DATALOADER.SKIP_BAD_IMAGES True to skip unreadable training images."
                ) from e
            self.num_skipped += 1
            logger.warning(
                f"Skipped unreadable image {file_name!r} ({e}); {self.num_skipped} image(s) "
                "skipped so far by this data-loading process."
            )
            return None


def sanitize_boxes(dataset_dicts, dataset_name):
    """Clips and drops invalid boxes of `dataset_dicts` in place (see the module doc) and logs
    one warning with the counts. Boxes in rotated modes are left alone. Returns the list."""
    counts = {"degenerate": 0, "outside": 0, "clipped": 0}
    examples = {}
    for record in dataset_dicts:
        height, width = record.get("height"), record.get("width")
        kept = []
        for ann in record.get("annotations", []):
            if ann["bbox_mode"] not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
                kept.append(ann)
                continue
            box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
            x0, y0, x1, y1 = box
            kind = None
            if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
                kind = "degenerate"
            elif height and width:
                clipped = [min(max(v, 0), side) for v, side in zip(box, (width, height) * 2)]
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    kind = "outside"
                elif clipped != list(box):
                    counts["clipped"] += 1
                    examples.setdefault("clipped", (record["file_name"], ann["bbox"]))
                    ann = {**ann, "bbox": clipped, "bbox_mode": BoxMode.XYXY_ABS}
            if kind:
                counts[kind] += 1
                examples.setdefault(kind, (record["file_name"], ann["bbox"]))
            else:
                kept.append(ann)
        if "annotations" in record:
            record["annotations"] = kept
    if any(counts.values()):
        what = {
            "degenerate": "dropped {} box(es) with non-positive width or height",
            "outside": "dropped {} box(es) entirely outside their image",
            "clipped": "clipped {} box(es) partly outside their image",
        }
        found = [
            what[k].format(n) + f" (e.g. {examples[k][1]} in {examples[k][0]})"
            for k, n in counts.items()
            if n
        ]
        logger.warning(f"Dataset {dataset_name!r}: " + "; ".join(found) + ".")
    return dataset_dicts
