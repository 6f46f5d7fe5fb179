"""Double-Head building blocks: parameter counts, the non-local block, loss arithmetic, fusion."""

import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from double_head import (
    DoubleHeadConvHead,
    DoubleHeadOutputLayers,
    NonLocalBlock,
    add_doublehead_config,
    fuse_scores,
    loss_term_weights,
)
from double_head.outputs import check_test_mode

torch.set_num_threads(1)

M = 2**20  # the paper's "M"
POOLED = ShapeSpec(channels=256, height=7, width=7)


def _cfg(**double_head):
    cfg = get_cfg()
    add_doublehead_config(cfg)
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    for key, value in double_head.items():
        cfg.MODEL.DOUBLE_HEAD[key] = value
    return cfg


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def _num_conv_weights(module):
    """Parameters of the conv and fc weights alone: what the paper counts."""
    return sum(p.numel() for p in module.parameters() if p.dim() > 1)


def test_parameter_counts_match_paper():
    cfg = _cfg()
    assert _num_params(FastRCNNConvFCHead(cfg, POOLED)) == 13_895_680  # 13.25 M
    head = DoubleHeadConvHead(cfg, POOLED)
    blocks = [name for name, _ in head.named_children()]
    assert blocks == [
        "up_channel", "nonlocal1", "bottleneck1", "nonlocal2", "bottleneck2", "avgpool", "flatten"
    ]  # fmt: skip
    for block, paper in [("up_channel", 1.06), ("bottleneck1", 1.06), ("nonlocal1", 2.0)]:
        assert _num_conv_weights(getattr(head, block)) / M == pytest.approx(paper, abs=0.005), block
    assert _num_conv_weights(head) == 7_536_640  # 7.19 M, the paper's figure
    # All parameters: biases of theta, phi, g and of the last conv (authors' init), BN affine.
    assert _num_params(head.up_channel) == 1_118_720  # 1.07 M
    assert _num_params(head.bottleneck1) == 1_117_184  # 1.07 M
    assert _num_params(head.nonlocal1) == 2_101_760  # 2.00 M, 1024 of them the last conv's bias
    assert _num_params(head) == 7_556_608  # 7.21 M


@pytest.mark.parametrize("num_bottlenecks,num_nonlocal", [(0, 0), (4, 0), (3, 3), (2, 1)])
def test_conv_head_depths(num_bottlenecks, num_nonlocal):
    """Table 2 depths: K = 1 + bottlenecks + non-local blocks; the output is always (R, width)."""
    cfg = _cfg()
    cfg.MODEL.DOUBLE_HEAD.CONV_HEAD.merge_from_list(
        ["NUM_BOTTLENECKS", num_bottlenecks, "NUM_NONLOCAL", num_nonlocal, "CONV_DIM", 64,
         "BOTTLENECK_DIM", 16, "NONLOCAL_DIM", 32]
    )  # fmt: skip
    head = DoubleHeadConvHead(cfg, ShapeSpec(channels=8, height=7, width=7))
    names = [name for name, _ in head.named_children()]
    assert sum(n.startswith("bottleneck") for n in names) == num_bottlenecks
    assert sum(n.startswith("nonlocal") for n in names) == num_nonlocal
    assert head(torch.rand(3, 8, 7, 7)).shape == (3, 64)
    assert head.output_shape.channels == 64


def test_conv_head_scripts():
    head = DoubleHeadConvHead(_cfg(), POOLED).eval()
    x = torch.rand(2, 256, 7, 7)
    assert torch.allclose(torch.jit.script(head)(x), head(x))


def test_more_nonlocal_than_bottlenecks_is_refused():
    with pytest.raises(ValueError, match="num_nonlocal"):
        DoubleHeadConvHead(
            POOLED, conv_dim=16, bottleneck_dim=4, num_bottlenecks=1, num_nonlocal=2,
            nonlocal_dim=8, nonlocal_groups=4,
        )  # fmt: skip


@pytest.mark.parametrize("init", ["zero_conv", "zero_norm"])
def test_nonlocal_block_starts_as_identity_and_relu(init):
    """
    zero_conv (authors' code): last 1x1 conv with a bias, weight and bias 0, BN scale 1;
    zero_norm (the earlier init): last conv without bias, BN scale 0. Both: relu(x) exactly, in
    training (batch statistics) and in inference (running statistics) mode.
    """
    torch.manual_seed(0)
    block = NonLocalBlock(8, inner_channels=4, num_groups=2, init=init)
    conv, norm = block.out, block.out.norm
    if init == "zero_conv":
        assert conv.bias is not None and not conv.weight.any() and not conv.bias.any()
        assert torch.equal(norm.weight, torch.ones(8)) and not norm.bias.any()
    else:
        assert conv.bias is None and conv.weight.any()
        assert not norm.weight.any() and not norm.bias.any()
    x = torch.randn(3, 8, 7, 7)  # negative values too: relu(x + 0)
    assert torch.equal(block(x), torch.relu(x))  # training mode
    assert torch.equal(block.eval()(x), torch.relu(x))


def test_nonlocal_init_is_refused_unless_known():
    cfg = _cfg()
    cfg.MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_INIT = "zero"
    message = r"CONV_HEAD.NONLOCAL_INIT must be one of \['zero_conv', 'zero_norm'\], got 'zero'"
    with pytest.raises(ValueError, match=message):
        DoubleHeadConvHead(cfg, POOLED)


def test_nonlocal_block_definition():
    """y_i = sum_j (theta_i . phi_j / N) g_j within each group, then the last conv and BN."""
    torch.manual_seed(0)
    block = NonLocalBlock(6, inner_channels=4, num_groups=2).eval()
    x = torch.rand(2, 6, 3, 3)
    for param in (block.out.weight, block.out.bias):  # zero at initialisation
        torch.nn.init.normal_(param)
    theta, phi, g = (conv(x).flatten(2) for conv in (block.theta, block.phi, block.g))
    y = torch.zeros_like(g)  # (R, inner channels, N)
    for group in (slice(0, 2), slice(2, 4)):
        for i in range(9):
            for j in range(9):
                weight = (theta[:, group, i] * phi[:, group, j]).sum(1, keepdim=True) / 9
                y[:, group, i] += weight * g[:, group, j]
    expected = torch.relu(x + block.out(y.reshape(2, 4, 3, 3)))
    assert torch.allclose(block(x), expected, atol=1e-5)


# --- losses (Eq. 1-3) ----------------------------------------------------------------------------

# Two RoIs of an image with K = 2 classes: a foreground RoI of class 1 and a background RoI.
LOGITS = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
DELTAS = torch.zeros(2, 8)
DELTAS[0, 4:] = torch.tensor([0.5, 0.0, 0.2, -0.1])  # class-1 deltas of the foreground RoI


def _proposals():
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 70.0]]))
    p.gt_boxes = Boxes(torch.tensor([[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 1.0, 1.0]]))
    p.gt_classes = torch.tensor([1, 2])
    return [p]


def _hand_cross_entropy(logits, targets):
    return sum(
        math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits, targets)
    ) / len(targets)


# Target deltas of the foreground RoI with weights (10, 10, 5, 5): (1, 1, 0, 0); L1 (smooth-L1
# beta 0, Detectron2's default) summed over the coordinates, divided by the 2 sampled RoIs.
HAND_CE = _hand_cross_entropy(LOGITS.tolist(), [1, 2])
HAND_REG = (0.5 + 1.0 + 0.2 + 0.1) / 2


def _predictor(cfg, branch):
    return DoubleHeadOutputLayers(cfg, ShapeSpec(channels=4), branch=branch)


def test_loss_arithmetic_ext():
    cfg = _cfg()  # defaults: Double-Head-Ext
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    losses = {}
    with EventStorage():
        for branch in ("fc", "conv"):
            losses.update(_predictor(cfg, branch).losses((LOGITS, DELTAS), _proposals()))
    expected = {
        "loss_cls_fc": 2.0 * 0.7 * HAND_CE,
        "loss_box_reg_fc": 2.0 * 0.3 * HAND_REG,
        "loss_cls_conv": 2.5 * 0.2 * HAND_CE,
        "loss_box_reg_conv": 2.5 * 0.8 * HAND_REG,
    }
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5), key
    # the authors' products: fc cls 1.4, fc reg 0.6, conv cls 0.5, conv reg 2.0
    assert loss_term_weights(cfg) == {
        "fc": {"loss_cls": pytest.approx(1.4), "loss_box_reg": pytest.approx(0.6)},
        "conv": {"loss_cls": pytest.approx(0.5), "loss_box_reg": pytest.approx(2.0)},
    }


def test_vanilla_has_no_fc_regression_nor_conv_classification():
    cfg = _cfg(LAMBDA_FC=1.0, LAMBDA_CONV=1.0, TEST_MODE="double")
    fc, conv = _predictor(cfg, "fc"), _predictor(cfg, "conv")
    assert fc.bbox_pred is None and conv.cls_score is None  # untrained layers are not built
    scores, deltas = fc(torch.rand(2, 4))
    assert scores.shape == (2, 3) and deltas is None
    with EventStorage():
        losses = fc.losses((LOGITS, None), _proposals())
        losses.update(conv.losses((None, DELTAS), _proposals()))
    assert set(losses) == {"loss_cls_fc", "loss_box_reg_conv"}
    assert losses["loss_cls_fc"].item() == pytest.approx(2.0 * HAND_CE, rel=1e-5)
    assert losses["loss_box_reg_conv"].item() == pytest.approx(2.5 * HAND_REG, rel=1e-5)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("LAMBDA_FC", 1.5, r"MODEL.DOUBLE_HEAD.LAMBDA_FC must be in \[0, 1\], got 1.5"),
        ("LAMBDA_CONV", -0.1, r"MODEL.DOUBLE_HEAD.LAMBDA_CONV must be in \[0, 1\], got -0.1"),
        ("LOSS_WEIGHT_FC", -1.0, "MODEL.DOUBLE_HEAD.LOSS_WEIGHT_FC must be >= 0, got -1.0"),
        ("LOSS_WEIGHT_CONV", -2.5, "MODEL.DOUBLE_HEAD.LOSS_WEIGHT_CONV must be >= 0, got -2.5"),
    ],
)
def test_refused_config_values(key, value, message):
    with pytest.raises(ValueError, match=message):
        loss_term_weights(_cfg(**{key: value}))


# --- inference modes and fusion ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,refused",
    [
        ({}, {}),  # Ext trains all four parts
        ({"LAMBDA_FC": 1.0, "LAMBDA_CONV": 1.0}, {"fc": "LAMBDA_FC", "conv": "LAMBDA_CONV",
                                                  "fused": "LAMBDA_CONV"}),
        ({"LAMBDA_FC": 0.0}, {"fc": "LOSS_WEIGHT_FC \\* LAMBDA_FC",
                              "double": "LOSS_WEIGHT_FC \\* LAMBDA_FC",
                              "fused": "LOSS_WEIGHT_FC \\* LAMBDA_FC"}),
        ({"LOSS_WEIGHT_CONV": 0.0}, {"conv": "LOSS_WEIGHT_CONV", "double": "LOSS_WEIGHT_CONV",
                                     "fused": "LOSS_WEIGHT_CONV"}),
    ],
)  # fmt: skip
def test_modes_needing_an_untrained_part_are_refused(overrides, refused):
    weights = loss_term_weights(_cfg(**overrides))
    for mode in ("conv", "fc", "double", "fused"):
        if mode in refused:
            with pytest.raises(ValueError, match=f"never trained.*{refused[mode]}"):
                check_test_mode(mode, weights)
        else:
            check_test_mode(mode, weights)
    with pytest.raises(ValueError, match="must be one of"):
        check_test_mode("ensemble", weights)


def test_fusion_formulas():
    torch.manual_seed(0)
    s_fc, s_conv = torch.rand(5, 4), torch.rand(5, 4)
    complementary = fuse_scores(s_fc, s_conv, "complementary")
    assert torch.allclose(complementary, s_fc + s_conv * (1 - s_fc))
    assert torch.allclose(complementary, 1 - (1 - s_fc) * (1 - s_conv))  # Eq. 4
    assert torch.allclose(fuse_scores(s_fc, s_conv, "average"), (s_fc + s_conv) / 2)
    assert torch.equal(fuse_scores(s_fc, s_conv, "max"), torch.where(s_fc > s_conv, s_fc, s_conv))
