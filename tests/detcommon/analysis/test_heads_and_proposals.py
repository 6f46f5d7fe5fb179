"""detcommon/analysis and tools/analyze.py on tiny untrained models of every kind of RoI heads."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from detcommon.analysis.heads import fc_heads, predict_heads
from detcommon.analysis.proposals import NUM_BINS, collect_proposal_records, iou_bins
from detcommon.engine.train import argument_parser, setup
from tests.conftest import TINY_OPTS, decodes_and_not_blank
from tools import analyze

torch.set_num_threads(1)


# Any shapes config as a model that runs in milliseconds on the CPU.
TINY_MODEL = [
    *TINY_OPTS, "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.DOUBLE_HEAD.CONV_HEAD.CONV_DIM", "32", "MODEL.DOUBLE_HEAD.CONV_HEAD.BOTTLENECK_DIM", "8",
    "MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_DIM", "16",
]  # fmt: skip
# name -> (config, extra overrides)
MODELS = {
    "faster_rcnn": ("configs/shapes/faster_rcnn.yaml", []),
    "dh_ext": ("configs/shapes/dh_ext.yaml", []),
    "dh": ("configs/shapes/dh.yaml", []),
    "drcnn_cascade": ("configs/shapes/drcnn_cascade.yaml", []),
    # Double-Head with the fc branch removed: a single conv-head that classifies and regresses.
    "conv_only": (
        "configs/shapes/dh.yaml",
        [
            "MODEL.DOUBLE_HEAD.LOSS_WEIGHT_FC",
            "0.0",
            "MODEL.DOUBLE_HEAD.LAMBDA_CONV",
            "0.5",
            "MODEL.DOUBLE_HEAD.TEST_MODE",
            "conv",
        ],
    ),
}
HEADS = {  # name -> {head: (has scores, has boxes)}
    "faster_rcnn": {"fc": (True, True)},
    "dh_ext": {"fc": (True, True), "conv": (True, True), "fused": (True, False)},
    "dh": {"fc": (True, False), "conv": (False, True)},
    "drcnn_cascade": {"classifier": (True, False), "regressor": (False, True)},
    "conv_only": {"conv": (True, True)},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shapes_root):
    """name -> (cfg, model in eval mode, weights file, CLI arguments that load it)."""
    models = {}
    for name, (config, extra) in MODELS.items():
        out = str(tmp_path_factory.mktemp(name))
        opts = [*TINY_MODEL, *extra]
        cfg = setup(
            argument_parser().parse_args(["--config-file", config, *opts, "OUTPUT_DIR", out])
        )
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        DetectionCheckpointer(model, save_dir=out).save("model")
        weights = os.path.join(out, "model.pth")
        cli = ["--config-file", config, "--weights", weights, "--max-images", "2"]
        models[name] = (cfg, model, weights, cli, opts)
    return models


def _image_features(model):
    image = torch.rand(3, 96, 120) * 255
    images = model.preprocess_image([{"image": image}])
    return model.backbone(images.tensor), images.image_sizes[0]


BOXES = torch.tensor([[10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 120.0, 96.0], [60.0, 30.0, 64.0, 35.0]])


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_scores_and_regresses_given_boxes(tiny, name):
    _, model, _, _, _ = tiny[name]
    features, size = _image_features(model)
    outputs = predict_heads(model.roi_heads, features, BOXES, size, torch.tensor([0, 3, 4]))
    assert {h: (o.scores is not None, o.boxes is not None) for h, o in outputs.items()} == HEADS[
        name
    ]
    for out in outputs.values():
        if out.scores is not None:
            assert out.scores.shape == (3,) and ((out.scores >= 0) & (out.scores <= 1)).all()
        if out.boxes is not None:
            assert out.boxes.shape == (3, 4)
            assert (out.boxes >= 0).all() and (out.boxes[:, 2] <= size[1]).all()


def test_fused_score_is_the_complementary_fusion(tiny):
    _, model, _, _, _ = tiny["dh_ext"]
    features, size = _image_features(model)
    out = predict_heads(model.roi_heads, features, BOXES, size, torch.tensor([1, 2, 0]))
    s_fc, s_conv = out["fc"].scores, out["conv"].scores
    torch.testing.assert_close(out["fused"].scores, s_fc + s_conv * (1 - s_fc))


def test_boxes_are_regressed_with_the_asked_class(tiny):
    """A regressor whose only output is a dx of k / 10 for class k shifts a box by k/100 of its
    width (weights 10): the asked class's deltas are the ones applied."""
    _, model, _, _, _ = tiny["faster_rcnn"]
    bbox_pred = model.roi_heads.box_predictor.bbox_pred
    saved = {k: v.clone() for k, v in bbox_pred.state_dict().items()}
    try:
        with torch.no_grad():
            bbox_pred.weight.zero_()
            bbox_pred.bias.zero_()
            bbox_pred.bias[0::4] = torch.arange(5.0) / 10
        features, size = _image_features(model)
        boxes = BOXES[[0, 0, 0]]
        classes = torch.tensor([0, 2, 4])
        out = predict_heads(model.roi_heads, features, boxes, size, classes)["fc"].boxes
        torch.testing.assert_close(
            out - boxes, (classes / 100.0 * 40)[:, None] * torch.tensor([1.0, 0, 1, 0])
        )
    finally:
        bbox_pred.load_state_dict(saved)


def test_windows_of_a_dataset_reach_every_head(tiny):
    cfg, model, _, _, _ = tiny["dh_ext"]
    dicts = DatasetCatalog.get("shapes_val")[:2]
    records = collect_proposal_records(model, cfg, dicts, per_box=40, progress=False)
    num_gt = sum(len(d["annotations"]) for d in dicts)
    assert len(records.gt_class) == len(records.gt_area) == num_gt
    assert len(records.proposal_iou) == num_gt * 40
    counts = np.zeros((num_gt, NUM_BINS), dtype=int)
    np.add.at(counts, (records.gt_index, iou_bins(records.proposal_iou)), 1)
    assert (counts == 2).all()
    assert set(records.scores) == {"fc", "conv", "fused"} and set(records.reg_ious) == {
        "fc",
        "conv",
    }
    for values in [*records.scores.values(), *records.reg_ious.values()]:
        assert values.shape == records.proposal_iou.shape and np.isfinite(values).all()


def _cli(tiny, name, command, out, *args):
    _, _, _, cli, opts = tiny[name]
    analyze.main([command, *cli, "--output-dir", str(out), *args, *opts])


def _fake_metrics(path):
    ap = {
        "bbox/AP-circle": 10.0,
        "bbox/AP-square": 40.0,
        "bbox/AP-triangle": 20.0,
        "bbox/AP-star": 5.0,
        "bbox/AP-hexagon": 60.0,
        "bbox/AP": 27.0,
    }
    path.write_text(json.dumps({"iteration": 3}) + "\n" + json.dumps(ap) + "\n")
    return str(path)


def test_proposals_command_writes_numbers_and_figures(tiny, tmp_path):
    few = ["--proposals-per-box", "20"]
    _cli(tiny, "faster_rcnn", "proposals", tmp_path / "base", *few, "--no-difficulty")
    metrics = _fake_metrics(tmp_path / "metrics.json")
    baseline = f"baseline={tmp_path / 'base/proposals.json'}"
    _cli(
        tiny,
        "dh_ext",
        "proposals",
        tmp_path / "ext",
        *few,
        "--class-ap",
        metrics,
        "--compare",
        baseline,
    )
    summary = json.loads((tmp_path / "ext" / "proposals.json").read_text())
    assert summary["heads"] == ["fc", "conv", "fused"]
    assert summary["difficulty_classes"] == {
        "hard": ["star", "circle"],
        "medium": ["triangle", "square"],
        "easy": ["hexagon"],
    }
    assert summary["class_ap"]["AP-star"] == 5.0 and summary["model"]["num_images"] == 2
    assert summary["groups"]["all"]["num_proposals"] == 20 * summary["groups"]["all"]["num_gt"]
    groups = ["all", *(f"size/{s}" for s in ("small", "medium", "large"))]
    groups += [f"difficulty/{d}" for d in ("hard", "medium", "easy")]
    assert list(summary["groups"]) == groups
    for group in summary["groups"].values():
        assert sum(group["count"]) == group["num_proposals"]
    for name in ("proposals.png", "proposals_by_size.png", "proposals_by_difficulty.png"):
        decodes_and_not_blank(tmp_path / "ext" / name)
    assert not (tmp_path / "base" / "proposals_by_difficulty.png").exists()
    rows = (tmp_path / "ext" / "proposals_bins.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 * 3 * NUM_BINS


def test_proposals_command_evaluates_class_ap_itself(tiny, tmp_path):
    _cli(tiny, "drcnn_cascade", "proposals", tmp_path, "--proposals-per-box", "20")
    summary = json.loads((tmp_path / "proposals.json").read_text())
    assert set(summary["class_ap"]) == {
        f"AP-{c}" for c in ("circle", "square", "triangle", "star", "hexagon")
    }
    assert "difficulty/easy" in summary["groups"]
    assert summary["heads"] == ["classifier", "regressor"]


def test_sensitivity_commands(tiny, tmp_path):
    _cli(tiny, "faster_rcnn", "fc-sensitivity", tmp_path)
    _cli(tiny, "dh_ext", "conv-sensitivity", tmp_path, "--rois-per-image", "8")
    fc = json.loads((tmp_path / "fc_sensitivity.json").read_text())["fc"]
    assert fc["layer"] == "roi_heads.box_head.fc1" and fc["resolution"] == [7, 7]
    matrix = np.array(fc["matrix"], dtype=float)
    assert matrix.shape == (49, 49) and np.allclose(np.diag(matrix), 1)
    conv = json.loads((tmp_path / "conv_sensitivity.json").read_text())["conv"]
    assert conv["num_rois"] == 16 and np.array(conv["matrix"], dtype=float).shape == (49, 49)
    decodes_and_not_blank(tmp_path / "fc_sensitivity_fc.png")
    decodes_and_not_blank(tmp_path / "conv_sensitivity_conv.png")


def test_decoupled_heads_are_all_fc_heads(tiny):
    heads = fc_heads(tiny["drcnn_cascade"][1].roi_heads)
    assert list(heads) == ["classifier", "regressor_stage1", "regressor_stage2", "regressor_stage3"]


@pytest.mark.parametrize(
    "name, command, args, message",
    [
        ("faster_rcnn", "conv-sensitivity", [],
         "no conv-head (DoubleHeadConvHead): its RoI heads are StandardROIHeads with box heads "
         "fc=FastRCNNConvFCHead"),
        ("conv_only", "fc-sensitivity", [],
         "no fc-head (FastRCNNConvFCHead with an fc layer): its RoI heads are DoubleHeadROIHeads "
         "with box heads conv=DoubleHeadConvHead"),
        ("dh_ext", "fc-sensitivity", ["--head", "conv"],
         "no fc-head (FastRCNNConvFCHead with an fc layer) named 'conv'; it has ['fc']"),
        ("dh_ext", "proposals", ["--weights", "/nonexistent/model.pth"],
         "MODEL.WEIGHTS '/nonexistent/model.pth' does not exist"),
        ("dh_ext", "proposals", ["--dataset", "nope"], "Dataset 'nope' is not registered"),
    ],
)  # fmt: skip
def test_errors_name_what_is_missing(tiny, tmp_path, capsys, name, command, args, message):
    with pytest.raises(SystemExit) as e:
        _cli(tiny, name, command, tmp_path, *args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
