"""Decoupled R-CNN (Wang et al.) for a model of rcnn_fpn.py: functions that the Decoupled R-CNN
twins call on their model (this file defines no config keys of its own).

The arguments are add_decoupled_rcnn_config's defaults, plain Decoupled R-CNN as the authors'
COCO code trains and tests it. The MODEL.DECOUPLED keys become

    NMS_THRESH_REG                      model.proposal_generator.nms_thresh_reg
    REG_BATCH_SIZE_PER_IMAGE            model.roi_heads.reg_batch_size_per_image
    NUM_REG_STAGES                      len(model.roi_heads.reg_heads) (see cascade_regression)
    REG_STAGE_BBOX_REG_WEIGHTS          model.roi_heads.reg_box2box_transforms[k].weights
    REG_STAGE_LOSS_WEIGHTS, REG_LOSS_LAMBDA
                                        model.roi_heads.reg_loss_weights.stage_loss_weights, .reg_loss_lambda
    REG_LOSS_TYPE, SMOOTH_L1_BETA       model.roi_heads.smooth_l1_beta (0: L1)
    REG_LOSS_NORMALIZER(_PER_IMAGE)     model.roi_heads.reg_loss_normalizer(_per_image)
    REG_PROPOSAL_APPEND_GT, FAST_PATH   model.roi_heads.reg_proposal_append_gt, .fast_path
    REG_ROI_SCALE                       model.roi_heads.reg_pooler (None: 1.0; else enlarged_pooler(scale))
    REG_HEAD_NAME                       the module of model.roi_heads.reg_heads[0]
    TEST_STAGE, TEST_CLASS_BOXES        model.roi_heads.test_stage (1-based; the YAML's 0 = the last), .test_class_boxes

SHARE_FC (one trunk for the classifier and the first regressor) has no LazyConfig form: a config
cannot make two arguments one module.
"""

import copy

from detectron2.config import LazyCall as L
from detectron2.modeling.box_regression import Box2BoxTransform

from decoupled_rcnn import DecoupledROIHeads, DecoupledRPN
from decoupled_rcnn.lazy import (
    decoupled_classifier,
    decoupled_reg_loss_weights,
    decoupled_regressor,
)


def to_decoupled_rcnn(model):
    """Turns `model`'s RPN into DecoupledRPN and its StandardROIHeads into DecoupledROIHeads, in
    place: one regression stage, class-specific, on an unshared trunk configured as the
    classifier's (MODEL.ROI_BOX_HEAD, REG_HEAD_NAME "FastRCNNConvFCHead"); the test thresholds
    move from the box predictor to the heads."""
    model.proposal_generator._target_ = DecoupledRPN
    # NMS threshold of the RPN's second, regression proposal set (training only; Table III). The
    # classification set keeps nms_thresh (0.7).
    model.proposal_generator.nms_thresh_reg = 0.85
    heads = model.roi_heads
    heads._target_ = DecoupledROIHeads
    predictor = heads.pop("box_predictor")
    num_classes = "${model.roi_heads.num_classes}"
    heads.box_predictor = L(decoupled_classifier)(
        input_shape=predictor.input_shape, num_classes=num_classes
    )
    heads.update(
        reg_heads=[copy.deepcopy(heads.box_head)],
        reg_predictors=[
            L(decoupled_regressor)(input_shape=copy.deepcopy(predictor.input_shape), num_classes=num_classes)
        ],
        reg_box2box_transforms=[L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0))],
        reg_batch_size_per_image=512,  # most positive RoIs per image sampled for each stage
        reg_loss_weights=L(decoupled_reg_loss_weights)(stage_loss_weights=[1.0], reg_loss_lambda=1.0),
        smooth_l1_beta=0.0,  # REG_LOSS_TYPE "l1" (paper)
        # Divisor of each stage's summed regression loss: 1024 RoIs per image (the authors' code)
        reg_loss_normalizer="fixed",
        reg_loss_normalizer_per_image=1024,
        reg_proposal_append_gt=False,
        reg_pooler=None,  # REG_ROI_SCALE 1.0
        test_stage=1,
        test_class_boxes="auto",  # "per_class" for one stage, "argmax" for a cascade
        fast_path=True,
        test_score_thresh=predictor.test_score_thresh,
        test_nms_thresh=predictor.test_nms_thresh,
        test_topk_per_image=predictor.test_topk_per_image,
    )  # fmt: skip


def cascade_regression(model, *, bbox_reg_weights, stage_loss_weights):
    """Cascaded regression on `model`'s DecoupledROIHeads, in place, as MODEL.DECOUPLED.NUM_REG_STAGES
    > 1: stage 1 as it is, each later stage a class-agnostic regressor on a trunk configured as
    the classifier's, one stage per entry of `bbox_reg_weights` (REG_STAGE_BBOX_REG_WEIGHTS)
    and `stage_loss_weights` (REG_STAGE_LOSS_WEIGHTS); the test boxes are the last stage's."""
    if len(bbox_reg_weights) != len(stage_loss_weights):
        raise ValueError(
            f"cascade_regression: {len(bbox_reg_weights)} bbox_reg_weights but {len(stage_loss_weights)} "
            "stage_loss_weights: give one of each per regression stage"
        )
    heads = model.roi_heads
    later = range(len(bbox_reg_weights) - 1)
    heads.reg_heads = [heads.reg_heads[0]] + [copy.deepcopy(heads.box_head) for _ in later]
    heads.reg_predictors = [heads.reg_predictors[0]] + [
        L(decoupled_regressor)(
            input_shape=copy.deepcopy(heads.box_predictor.input_shape), num_classes=1
        )
        for _ in later
    ]
    heads.reg_box2box_transforms = [L(Box2BoxTransform)(weights=tuple(w)) for w in bbox_reg_weights]
    heads.reg_loss_weights.stage_loss_weights = list(stage_loss_weights)
    heads.test_stage = len(bbox_reg_weights)  # MODEL.DECOUPLED.TEST_STAGE 0: the last stage
