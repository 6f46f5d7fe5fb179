"""The evaluator's extra AP columns on a hand-built case whose APs are known exactly."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances

from detcommon import PaperCOCOEvaluator, register_coco_dataset


def _box_with_iou(iou, side=100.0):
    """A box [x0, y0, x1, y1] sharing the GT's y-extent whose IoU with [0, 0, side, side] is `iou`."""
    # Shift right by d: IoU = (side - d) / (side + d).
    d = side * (1 - iou) / (1 + iou)
    return [d, 0.0, side + d, side]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalds")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 200, "width": 200}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 100, 100],
                "area": 10000,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 100, 100],
                "area": 10000,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "gt.json").write_text(json.dumps(coco))
    register_coco_dataset("eval_tiny", str(root / "gt.json"), str(root))
    DatasetCatalog.get("eval_tiny")  # sets the id mapping in the metadata
    return "eval_tiny", root


def test_extra_columns_match_hand_computation(tiny_dataset):
    name, root = tiny_dataset
    # Class a is found at IoU 0.82, class b at IoU 0.62, one detection each with score 0.9.
    boxes = torch.tensor([_box_with_iou(0.82), _box_with_iou(0.62)])
    inst = Instances(
        (200, 200),
        pred_boxes=Boxes(boxes),
        scores=torch.tensor([0.9, 0.9]),
        pred_classes=torch.tensor([0, 1]),
    )
    evaluator = PaperCOCOEvaluator(name, output_dir=str(root / "out"))
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    res = evaluator.evaluate()["bbox"]
    # Per threshold a class scores 100 if its IoU reaches it, else 0; columns average the classes.
    assert res["AP50"] == pytest.approx(100)
    assert res["AP60"] == pytest.approx(100)
    assert res["AP70"] == pytest.approx(50)
    assert res["AP75"] == pytest.approx(50)
    assert res["AP80"] == pytest.approx(50)
    assert res["AP90"] == pytest.approx(0)
    # AP over 0.50:0.95: class a passes 7 of 10 thresholds, class b 3 of 10.
    assert res["AP"] == pytest.approx((70 + 30) / 2)


def test_no_predictions_gives_nan_columns(tiny_dataset):
    name, root = tiny_dataset
    evaluator = PaperCOCOEvaluator(name, output_dir=str(root / "out2"))
    evaluator.reset()
    empty = Instances(
        (200, 200),
        pred_boxes=Boxes(torch.zeros(0, 4)),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.long),
    )
    evaluator.process([{"image_id": 1}], [{"instances": empty}])
    res = evaluator.evaluate()["bbox"]
    assert all(res[k] != res[k] for k in ("AP", "AP60", "AP90"))  # NaN, as Detectron2 reports
