"""train_net.py end to end on the embedded data: train, checkpoint, --eval-only, --resume,
DefaultPredictor, and two CPU processes over gloo. Each run lasts a few iterations."""

import json
import os

import cv2
import pytest
import torch

from tests.conftest import TINY_OPTS, run_train_net

CONFIG = "configs/shapes/faster_rcnn.yaml"


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-iteration run with checkpoints every 2 iterations; evaluation disabled."""
    out = str(tmp_path_factory.mktemp("train"))
    code, log = run_train_net(
        "--config-file", CONFIG, *TINY_OPTS, "DATASETS.TEST", "()", "OUTPUT_DIR", out
    )
    assert code == 0, log[-3000:]
    return out, log


def test_training_writes_checkpoints_and_metrics(trained):
    out, log = trained
    for name in (
        "model_0000001.pth",
        "model_0000003.pth",
        "model_final.pth",
        "last_checkpoint",
        "config.yaml",
    ):
        assert os.path.isfile(os.path.join(out, name)), name
    rows = [r for r in _metrics(out) if "total_loss" in r]
    assert rows and rows[-1]["iteration"] == 3
    for key in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
        assert key in rows[-1]
    assert "Starting training from iteration 0" in log


def test_eval_only_prints_the_paper_ap_table(trained, tiny_val):
    out, _ = trained
    weights = os.path.join(out, "model_final.pth")
    code, log = run_train_net(
        "--config-file",
        CONFIG,
        "--eval-only",
        *tiny_val,
        *TINY_OPTS,
        "DATASETS.TEST",
        "('tiny_val',)",
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        os.path.join(out, "eval"),
    )
    assert code == 0, log[-3000:]
    assert "Box AP with the Decoupled R-CNN paper's columns" in log
    header = next(line for line in log.splitlines() if "AP60" in line and "AP90" in line)
    for column in ("AP", "AP50", "AP70", "AP75", "AP80", "APs", "APm", "APl"):
        assert column in header


def test_eval_only_refuses_missing_weights(tmp_path):
    code, log = run_train_net(
        "--config-file",
        CONFIG,
        "--eval-only",
        "MODEL.WEIGHTS",
        str(tmp_path / "nothing.pth"),
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert code != 0 and "does not exist; nothing to evaluate" in log


def test_resume_continues_at_the_saved_iteration(trained, tmp_path):
    out, _ = trained
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    for name in ("model_0000003.pth", "model_final.pth"):
        os.link(os.path.join(out, name), os.path.join(resumed, name))
    with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
        f.write(
            "model_0000003.pth"
        )  # as if the run had stopped after its checkpoint at iteration 3
    code, log = run_train_net(
        "--config-file",
        CONFIG,
        "--resume",
        *TINY_OPTS,
        "SOLVER.MAX_ITER",
        "6",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        resumed,
    )
    assert code == 0, log[-3000:]
    assert "Starting training from iteration 4" in log
    iterations = [r["iteration"] for r in _metrics(resumed) if "total_loss" in r]
    assert min(iterations) >= 4 and max(iterations) == 5


def test_default_predictor_returns_boxes(trained, shapes_root):
    from detectron2.engine import DefaultPredictor

    from detcommon.data.shapes import ensure_shapes
    from detcommon.engine.train import argument_parser, setup

    out, _ = trained
    args = argument_parser().parse_args(
        [
            "--config-file",
            CONFIG,
            *TINY_OPTS,
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
            "OUTPUT_DIR",
            os.path.join(out, "predict"),
        ]
    )
    predictor = DefaultPredictor(setup(args))
    image = cv2.imread(os.path.join(ensure_shapes("shapes_val"), "images", "00000.png"))
    instances = predictor(image)["instances"]
    assert 0 < len(instances) <= 20
    boxes = instances.pred_boxes.tensor
    assert instances.image_size == image.shape[:2]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= image.shape[1]).all()
    assert torch.all(instances.pred_classes < 5)


def test_demo_cli_draws_predictions(trained, tmp_path):
    from detcommon.data.shapes import ensure_shapes
    from tools.demo import expand_inputs
    from tools.demo import main as demo_main

    out, _ = trained
    images = os.path.join(ensure_shapes("shapes_val"), "images")
    assert expand_inputs([images])[:2] == [
        os.path.join(images, "00000.png"),
        os.path.join(images, "00001.png"),
    ]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.nothing")])
    written = demo_main(
        [
            "--config-file",
            CONFIG,
            "--input",
            os.path.join(images, "0000[01].png"),
            "--output",
            str(tmp_path),
            "--confidence-threshold",
            "0.0",
            "--opts",
            *TINY_OPTS,
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
        ]
    )
    assert [os.path.basename(p) for p in written] == ["00000.png", "00001.png"]
    drawn, original = cv2.imread(written[0]), cv2.imread(os.path.join(images, "00000.png"))
    assert drawn.shape == original.shape and (drawn != original).any()  # boxes were drawn
