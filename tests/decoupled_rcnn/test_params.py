"""Parameter counts against the paper (Tables VIII and XI): 80 classes, 256-channel FPN, 7x7 RoIs.

The paper's totals (R-50 FPN): FPN 41.53 M, Decoupled R-CNN 55.42 M (+13.89), with cascaded
regression 83.22 M (+41.69), with Double-Head's conv-head regressor 47.12 M (+5.59).
Only the RoI heads differ, so the deltas are measured on them.
"""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads

from decoupled_rcnn import add_decoupled_rcnn_config

FPN_SHAPE = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 6)}
FC_TRUNK = 256 * 7 * 7 * 1024 + 1024 + 1024 * 1024 + 1024  # 13,895,680
AGNOSTIC_BOX_LAYER = 1024 * 4 + 4


def _num_params(**decoupled):
    cfg = get_cfg()
    add_decoupled_rcnn_config(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = list(FPN_SHAPE)
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    if decoupled:
        cfg.MODEL.ROI_HEADS.NAME = "DecoupledROIHeads"
        if decoupled.get("REG_HEAD_NAME") == "DoubleHeadConvHead":
            pytest.importorskip("double_head").add_doublehead_config(cfg)
            cfg.MODEL.DOUBLE_HEAD.CONV_HEAD.NUM_BOTTLENECKS = 4
            cfg.MODEL.DOUBLE_HEAD.CONV_HEAD.NUM_NONLOCAL = 0
        cfg.MODEL.DECOUPLED.merge_from_list([x for kv in decoupled.items() for x in kv])
    # Parameters are counted, not trained: skip the (slow) random initialisation.
    with torch.device("meta"):
        heads = build_roi_heads(cfg, FPN_SHAPE)
    return sum(p.numel() for p in heads.parameters())


@pytest.fixture(scope="module")
def baseline():
    return _num_params()


def test_decoupled_adds_exactly_one_fc_trunk(baseline):
    delta = _num_params(SHARE_FC=False) - baseline
    assert delta == FC_TRUNK
    assert delta / 1e6 == pytest.approx(13.89, abs=0.015)  # paper: 55.42 - 41.53, rounded totals


def test_shared_fc_ablation_adds_nothing(baseline):
    assert _num_params(SHARE_FC=True) == baseline


def test_three_stage_cascade(baseline):
    delta = (
        _num_params(
            NUM_REG_STAGES=3,
            REG_STAGE_BBOX_REG_WEIGHTS=((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)),
            REG_STAGE_LOSS_WEIGHTS=(1.0, 0.5, 0.25),
        )
        - baseline
    )
    # One trunk for the unshared first regressor, two more trunks with 4-output box layers.
    assert delta == 3 * FC_TRUNK + 2 * AGNOSTIC_BOX_LAYER
    assert delta / 1e6 == pytest.approx(41.69, abs=0.015)  # paper: 83.22 - 41.53


def test_conv_head_regressor(baseline):
    delta = _num_params(REG_HEAD_NAME="DoubleHeadConvHead") - baseline
    # The conv-head (up-channel block + 4 bottlenecks, BN) replaces nothing: the classifier
    # keeps the baseline's fc trunk; the class-specific box layer moves onto the conv-head.
    assert delta / 1e6 == pytest.approx(5.59, abs=0.015)  # paper: 47.12 - 41.53
