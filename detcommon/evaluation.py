"""COCO box evaluation with the extra IoU columns the Decoupled R-CNN paper reports."""
import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import create_small_table

__all__ = ["PaperCOCOEvaluator", "ap_at_iou"]

# COCOeval's IoU thresholds are 0.50:0.05:0.95; these columns are single thresholds of them.
EXTRA_IOU_COLUMNS = {"AP60": 0.60, "AP70": 0.70, "AP80": 0.80, "AP90": 0.90}
# The order of the printed table: the COCO columns with the paper's columns between them.
TABLE_ORDER = ["AP", "AP50", "AP60", "AP70", "AP75", "AP80", "AP90", "APs", "APm", "APl"]


def ap_at_iou(coco_eval, iou):
    """AP (in %) at one IoU threshold, all areas, maxDets=100, from an evaluated COCOeval."""
    t = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou))
    if len(t) != 1:
        raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {coco_eval.params.iouThrs}")
    # precision: [T IoUs, R recall points, K classes, A areas (0 = all), M maxDets (-1 = 100)]
    precision = coco_eval.eval["precision"][t[0], :, :, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean() * 100) if valid.size else float("nan")


class PaperCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator for boxes that also reports AP60, AP70, AP80 and AP90."""

    def __init__(self, dataset_name, output_dir=None, **kwargs):
        kwargs.setdefault("tasks", ("bbox",))
        super().__init__(dataset_name, output_dir=output_dir, **kwargs)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type != "bbox":
            return results
        for column, iou in EXTRA_IOU_COLUMNS.items():
            results[column] = ap_at_iou(coco_eval, iou) if coco_eval is not None else float("nan")
        table = {k: results[k] for k in TABLE_ORDER}
        self._logger.info("Box AP with the Decoupled R-CNN paper's columns:\n" + create_small_table(table))
        return results
