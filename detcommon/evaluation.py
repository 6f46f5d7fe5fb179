"""COCO box evaluation with the extra IoU columns the Decoupled R-CNN paper reports."""

import json
import os

import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import create_small_table

__all__ = ["PaperCOCOEvaluator", "ap_at_iou", "write_eval_results"]

# COCOeval's IoU thresholds, 0.50:0.05:0.95, each also a column "AP50" ... "AP95" (the Decoupled
# R-CNN paper reports AP60-AP90; AP against IoU plots use all ten).
IOU_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]
# The order of the printed table: the COCO columns with the paper's columns between them.
TABLE_ORDER = ["AP", "AP50", "AP60", "AP70", "AP75", "AP80", "AP90", "APs", "APm", "APl"]


def ap_at_iou(coco_eval, iou):
    """AP (in %) at one IoU threshold, all areas, maxDets=100, from an evaluated COCOeval."""
    t = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou))
    if len(t) != 1:
        raise ValueError(
            f"IoU {iou} is not one of COCOeval's thresholds {coco_eval.params.iouThrs}"
        )
    # precision: [T IoUs, R recall points, K classes, A areas (0 = all), M maxDets (-1 = 100)]
    precision = coco_eval.eval["precision"][t[0], :, :, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean() * 100) if valid.size else float("nan")


class PaperCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator for boxes that also reports AP at every IoU threshold (AP55 ... AP95), the
    Decoupled R-CNN paper's AP60, AP70, AP80 and AP90 among them, printed with the COCO columns."""

    def __init__(self, dataset_name, output_dir=None, **kwargs):
        kwargs.setdefault("tasks", ("bbox",))
        super().__init__(dataset_name, output_dir=output_dir, **kwargs)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type != "bbox":
            return results
        for iou in IOU_THRESHOLDS:
            column = f"AP{round(iou * 100)}"
            if column not in results:  # AP50 and AP75 are COCOeval's own
                results[column] = (
                    ap_at_iou(coco_eval, iou) if coco_eval is not None else float("nan")
                )
        table = {k: results[k] for k in TABLE_ORDER}
        self._logger.info(
            "Box AP with the Decoupled R-CNN paper's columns:\n" + create_small_table(table)
        )
        return results


def write_eval_results(results, path):
    """Writes the results of `DefaultTrainer.test` ({task: {column: value}}) as JSON, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
