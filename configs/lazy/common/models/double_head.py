"""Double-Head's RoI heads (Wu et al., CVPR 2020) for a model of rcnn_fpn.py: functions that the
Double-Head twins call on their model (this file defines no config keys of its own).

The arguments are add_doublehead_config's defaults, Double-Head-Ext (R-50 FPN: 40.3 AP): both
heads also learn their unfocused task, the two classifiers fused at test time (Eq. 4). The
MODEL.DOUBLE_HEAD keys become

    LOSS_WEIGHT_FC, LAMBDA_FC         model.roi_heads.box_predictors.fc.loss_weight.loss_weight_fc, .lambda_fc
    LOSS_WEIGHT_CONV, LAMBDA_CONV     model.roi_heads.box_predictors.conv.loss_weight.loss_weight_conv, .lambda_conv
    CONV_ROI_SCALE, CONV_ROI_POOLING  model.roi_heads.conv_roi_scale, .conv_roi_pooling
    TEST_MODE, FUSION, EVAL_MODES     model.roi_heads.test_mode, .fusion, .eval_modes
    FAST_PATH, FUSED_PREFILTER_THRESH model.roi_heads.fast_path, .fused_prefilter_thresh
    CONV_HEAD.*                       model.roi_heads.box_heads.conv.* (conv_dim, bottleneck_dim, ...)
    CLS_HEAD_NAME, REG_HEAD_NAME      the modules of model.roi_heads.box_heads.fc, .conv

A branch whose two loss weights are 0 is left out by the YAML path; here, delete it from
box_heads and box_predictors. CONV_ROI_SCALE 1.0 (pool once) also needs conv_box_pooler=None.
"""

import copy
from collections import OrderedDict

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from double_head import DoubleHeadConvHead, DoubleHeadOutputLayers, DoubleHeadROIHeads
from double_head.lazy import double_head_loss_weight

from .rcnn_fpn import enlarged_pooler

# The fc branch's predictor keys that the YAML path reads from one key for both branches
# (MODEL.ROI_BOX_HEAD.*, MODEL.ROI_HEADS.SCORE_THRESH_TEST, ...): the conv branch follows the fc's.
_SHARED_PREDICTOR_KEYS = (
    "box2box_transform", "cls_agnostic_bbox_reg", "smooth_l1_beta", "box_reg_loss_type", "test_score_thresh",
    "test_nms_thresh", "test_topk_per_image",
)  # fmt: skip


def conv_head(**kwargs):
    """DoubleHeadConvHead (Fig. 5) on the pooled RoIs with MODEL.DOUBLE_HEAD.CONV_HEAD's defaults,
    the paper's choice (Table 2, "K = 5 with NL": an up-channel block, 2 x (non-local +
    bottleneck)); `kwargs` replace arguments."""
    head = L(DoubleHeadConvHead)(
        input_shape=L(ShapeSpec)(
            channels="${model.backbone.out_channels}",
            height="${model.roi_heads.box_pooler.output_size}",
            width="${model.roi_heads.box_pooler.output_size}",
        ),
        conv_dim=1024,  # channels of the residual stream and of the output vector
        bottleneck_dim=256,  # inner channels of the up-channel block and of each bottleneck
        num_bottlenecks=2,
        num_nonlocal=2,  # one non-local block before each of the first num_nonlocal bottlenecks
        nonlocal_dim=512,
        nonlocal_groups=4,
        nonlocal_init="zero_conv",  # authors' _NonLocalBlockND_Group
        norm="BN",
    )
    head.update(kwargs)
    return head


def to_double_head(model):
    """Turns `model`'s StandardROIHeads into DoubleHeadROIHeads, in place, as
    MODEL.ROI_HEADS.NAME "DoubleHeadROIHeads" does: sampling, matcher and pooler stay; the box
    head becomes the fc branch's (Detectron2's FastRCNNConvFCHead, CLS_HEAD_NAME) and the
    conv branch gets :func:`conv_head` (REG_HEAD_NAME), pooled from proposals enlarged 1.3x on
    their own FPN level; each branch has its own classifier and class-specific regressor."""
    heads = model.roi_heads
    heads._target_ = DoubleHeadROIHeads
    fc = heads.pop("box_predictor")
    fc._target_ = DoubleHeadOutputLayers
    fc.branch = "fc"
    # w_fc of Eq. 1 (Table 1 bottom: 2.0), lambda_fc of Eq. 2 (0.7 = Double-Head-Ext)
    fc.loss_weight = L(double_head_loss_weight)(branch="fc", loss_weight_fc=2.0, lambda_fc=0.7)
    conv = copy.deepcopy(fc)
    conv.input_shape = L(ShapeSpec)(channels="${model.roi_heads.box_heads.conv.conv_dim}")
    conv.branch = "conv"
    # w_conv of Eq. 1 (2.5), lambda_conv of Eq. 3 (0.8 = Double-Head-Ext)
    conv.loss_weight = L(double_head_loss_weight)(
        branch="conv", loss_weight_conv=2.5, lambda_conv=0.8
    )
    for key in _SHARED_PREDICTOR_KEYS:
        conv[key] = "${model.roi_heads.box_predictors.fc.%s}" % key
    heads.box_heads = L(OrderedDict)(fc=heads.pop("box_head"), conv=conv_head())
    heads.box_predictors = L(OrderedDict)(fc=fc, conv=conv)
    heads.update(
        # authors' code: --conv-bbox-expand 1.3 (not in the paper), pooled as their PoolerNeighbor
        conv_box_pooler=enlarged_pooler("${model.roi_heads.conv_roi_scale}"),
        conv_roi_scale=1.3,
        conv_roi_pooling="original_level",
        test_mode="fused",  # Fig. 6d: conv boxes, fc and conv scores fused
        fusion="complementary",  # Eq. 4
        eval_modes=[],  # e.g. ["conv", "fc", "double", "fused"]: one AP table each, one pass
        fast_path=True,
        fused_prefilter_thresh=0.0,
    )
