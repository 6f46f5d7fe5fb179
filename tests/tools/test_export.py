"""tools/export_model.py: every project model exports to TorchScript (and ONNX) through
Detectron2's TracingAdapter, and the export's boxes equal the eager model's on other images
than the one it was traced with, including one with far fewer proposals."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from detcommon.data.shapes import ensure_shapes
from detcommon.engine.train import argument_parser, setup
from tests.conftest import TINY_OPTS
from tools.export_model import load_exported, model_input, unscaled_detections
from tools.export_model import main as export_main

# Random weights score every class of every proposal: 20 detections per image. 1000 proposals
# at most: how many survive the RPN's NMS depends on the image.
OPTS = [
    *TINY_OPTS,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "1000",
]
MODELS = ["faster_rcnn", "dh", "dh_ext", "drcnn", "drcnn_cascade"]
ONNX_MODELS = {"dh_ext", "drcnn_cascade"}  # the two new heads; ONNX export takes seconds each
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))


def _num_proposals(model, image):
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        proposals, _ = model.proposal_generator(images, model.backbone(images.tensor))
    return len(proposals[0])


@pytest.mark.parametrize("name", MODELS)
def test_exported_boxes_equal_eager_boxes(name, tmp_path):
    config = f"configs/shapes/{name}.yaml"
    cfg = setup(
        argument_parser().parse_args(["--config-file", config, *OPTS, "OUTPUT_DIR", str(tmp_path)])
    )
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(tmp_path)).save("random")
    weights = str(tmp_path / "random.pth")
    formats = ["torchscript", "onnx"] if name in ONNX_MODELS and HAS_ONNX else ["torchscript"]
    results = export_main(
        [
            "--config-file",
            config,
            "--output",
            str(tmp_path / "export"),
            "--format",
            *formats,
            "--opts",
            *OPTS,
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    assert sorted(results) == sorted(formats) and all(
        r["max_box_difference"] <= 1e-4 for r in results.values()
    )

    predictor = DefaultPredictor(
        setup(
            argument_parser().parse_args(
                [
                    "--config-file",
                    config,
                    *OPTS,
                    "MODEL.WEIGHTS",
                    weights,
                    "OUTPUT_DIR",
                    str(tmp_path),
                ]
            )
        )
    )
    images = os.path.join(ensure_shapes("shapes_val"), "images")
    other = cv2.imread(os.path.join(images, "00001.png"))  # the export was traced on 00000.png
    inputs = [model_input(predictor, other)]
    inputs.append(
        inputs[0][:, :40, :48].contiguous()
    )  # a 40x48 input: far fewer anchors and proposals
    sample = model_input(predictor, cv2.imread(os.path.join(images, "00000.png")))
    assert _num_proposals(predictor.model, inputs[1]) < _num_proposals(predictor.model, sample)
    for fmt, result in results.items():
        exported = load_exported(result["path"])
        for image in inputs:
            with torch.no_grad():
                boxes, scores, classes = (
                    t.numpy() for t in unscaled_detections(predictor.model, [{"image": image}])
                )
            out_boxes, out_scores, out_classes = exported(image)
            assert len(boxes) == 20 and out_boxes.shape == boxes.shape, fmt
            np.testing.assert_allclose(out_boxes, boxes, atol=1e-4, err_msg=fmt)
            np.testing.assert_allclose(out_scores, scores, atol=1e-4, err_msg=fmt)
            np.testing.assert_array_equal(out_classes, classes, err_msg=fmt)
