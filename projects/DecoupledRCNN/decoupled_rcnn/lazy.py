"""Decoupled R-CNN in LazyConfig runs (configs/lazy/, run by detcommon.engine.lazy): the output layers
and stage loss weights the configs instantiate where the YAML path builds them in code, and
check_decoupled_rcnn_config on the config's DecoupledROIHeads node and its RPN. Registered as
this package's `Project.check_lazy_node`.

The MODEL.DECOUPLED keys (and MODEL.RPN.NMS_THRESH) the checks name, for the heads at
`model.roi_heads` and the DecoupledRPN at `model.proposal_generator`:

    NMS_THRESH_REG, MODEL.RPN.NMS_THRESH   model.proposal_generator.nms_thresh_reg, .nms_thresh
    NUM_REG_STAGES                         len(model.roi_heads.reg_heads)
    REG_STAGE_BBOX_REG_WEIGHTS             model.roi_heads.reg_box2box_transforms
    REG_STAGE_LOSS_WEIGHTS, REG_LOSS_LAMBDA
                                           model.roi_heads.reg_loss_weights.stage_loss_weights, .reg_loss_lambda
    REG_ROI_SCALE                          model.roi_heads.reg_pooler.scale
    REG_BATCH_SIZE_PER_IMAGE, SMOOTH_L1_BETA, TEST_STAGE, REG_LOSS_NORMALIZER(_PER_IMAGE),
    TEST_CLASS_BOXES, FAST_PATH            model.roi_heads.<key in lower case>
"""

from typing import Dict, List, Optional

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from torch import nn

from detcommon.engine.lazy import lazy_keys, node_target, plain_value

from .config import add_decoupled_rcnn_config, check_decoupled_rcnn_config
from .roi_heads import DecoupledROIHeads, _linear

__all__ = [
    "decoupled_reg_loss_weights",
    "decoupled_classifier",
    "decoupled_regressor",
    "check_lazy_node",
]

# Where a DecoupledROIHeads node finds its RPN in a LazyConfig's model.
_RPN_PATH = "model.proposal_generator"
_HEADS_KEYS = ("REG_BATCH_SIZE_PER_IMAGE", "SMOOTH_L1_BETA", "TEST_STAGE", "REG_LOSS_NORMALIZER",
               "REG_LOSS_NORMALIZER_PER_IMAGE", "TEST_CLASS_BOXES", "FAST_PATH")  # fmt: skip


def decoupled_reg_loss_weights(
    *, stage_loss_weights: List[float], reg_loss_lambda: float = 1.0
) -> List[float]:
    """Each regression stage's loss weight (one per stage): MODEL.DECOUPLED.REG_LOSS_LAMBDA x
    REG_STAGE_LOSS_WEIGHTS[k], the YAML path's product."""
    return [reg_loss_lambda * w for w in stage_loss_weights]


def decoupled_classifier(input_shape: ShapeSpec, *, num_classes: int) -> nn.Linear:
    """The (K+1)-way classifier on the trunk's flattened features (K = num_classes), initialised
    as the YAML path's."""
    return _linear(input_shape, num_classes + 1, std=0.01)


def decoupled_regressor(input_shape: ShapeSpec, *, num_classes: int) -> nn.Linear:
    """One regression stage's 4 x num_classes box deltas (num_classes 1: class-agnostic),
    initialised as the YAML path's."""
    return _linear(input_shape, 4 * num_classes, std=0.001)


def _keys(rpn: str, heads: str, loss_weights_node: bool) -> Dict[str, str]:
    """MODEL.DECOUPLED keys (and MODEL.RPN.NMS_THRESH) -> the lazy keys of the RPN at `rpn` and
    the DecoupledROIHeads at `heads` (`loss_weights_node`: reg_loss_weights is a
    decoupled_reg_loss_weights node rather than a plain list)."""
    keys = {
        "MODEL.DECOUPLED.NMS_THRESH_REG": f"{rpn}.nms_thresh_reg",
        "MODEL.RPN.NMS_THRESH": f"{rpn}.nms_thresh",
        "MODEL.DECOUPLED.NUM_REG_STAGES": f"len({heads}.reg_heads)",
        "MODEL.DECOUPLED.REG_STAGE_BBOX_REG_WEIGHTS": f"{heads}.reg_box2box_transforms",
        "MODEL.DECOUPLED.REG_STAGE_LOSS_WEIGHTS": f"{heads}.reg_loss_weights"
        + (".stage_loss_weights" if loss_weights_node else ""),
        "MODEL.DECOUPLED.REG_LOSS_LAMBDA": f"{heads}.reg_loss_weights.reg_loss_lambda",
        "MODEL.DECOUPLED.REG_ROI_SCALE": f"{heads}.reg_pooler.scale",
    }
    for key in _HEADS_KEYS:
        keys[f"MODEL.DECOUPLED.{key}"] = f"{heads}.{key.lower()}"
    return keys


def _check_heads(path, node, model):
    """check_decoupled_rcnn_config on the MODEL.DECOUPLED values of the DecoupledROIHeads node at
    `path` and of model.proposal_generator; returns their {YAML key: lazy key}."""
    rpn = model.proposal_generator
    view = get_cfg()
    add_decoupled_rcnn_config(view)
    d = view.MODEL.DECOUPLED
    loss_weights = node.reg_loss_weights
    helper = node_target(loss_weights) is decoupled_reg_loss_weights
    d.NMS_THRESH_REG = rpn.get("nms_thresh_reg", d.NMS_THRESH_REG)
    view.MODEL.RPN.NMS_THRESH = rpn.nms_thresh
    d.REG_BATCH_SIZE_PER_IMAGE = node.reg_batch_size_per_image
    d.NUM_REG_STAGES = len(node.reg_heads)
    d.REG_STAGE_BBOX_REG_WEIGHTS = [
        plain_value(t.get("weights")) for t in node.reg_box2box_transforms
    ]
    d.REG_STAGE_LOSS_WEIGHTS = plain_value(
        loss_weights.stage_loss_weights if helper else loss_weights
    )
    d.REG_LOSS_LAMBDA = loss_weights.get("reg_loss_lambda", 1.0) if helper else 1.0
    d.SMOOTH_L1_BETA = node.smooth_l1_beta
    d.REG_LOSS_TYPE = "l1" if node.smooth_l1_beta == 0 else "smooth_l1"
    for key in (
        "REG_LOSS_NORMALIZER",
        "REG_LOSS_NORMALIZER_PER_IMAGE",
        "TEST_CLASS_BOXES",
        "FAST_PATH",
    ):
        d[key] = node.get(key.lower(), d[key])
    d.REG_PROPOSAL_APPEND_GT = node.get("reg_proposal_append_gt", False)
    d.REG_ROI_SCALE = (
        node.reg_pooler.get("scale", 1.0) if node.get("reg_pooler") is not None else 1.0
    )
    d.TEST_STAGE = node.test_stage
    keys = _keys(_RPN_PATH, path, helper)
    with lazy_keys(keys):
        check_decoupled_rcnn_config(view)
    if not 1 <= node.test_stage <= len(node.reg_heads):
        raise ValueError(
            f"{path}.test_stage must be a stage number in [1, len({path}.reg_heads)={len(node.reg_heads)}], got "
            f"{node.test_stage} (MODEL.DECOUPLED.TEST_STAGE 0, the last stage, is {len(node.reg_heads)} here): "
            f"set {path}.test_stage={len(node.reg_heads)} for the last stage"
        )
    return keys


def check_lazy_node(path: str, node, model) -> Optional[Dict[str, str]]:
    """`Project.check_lazy_node`: check_decoupled_rcnn_config on a DecoupledROIHeads node at `path`
    with the RPN of `model` (errors naming their lazy keys); returns their {YAML key: lazy key},
    None for a node of another class. The DecoupledRPN node is checked with its heads, and the
    pairing of the two by the YAML path's check (MODEL.ROI_HEADS.NAME, PROPOSAL_GENERATOR.NAME)."""
    if node_target(node) is DecoupledROIHeads:
        return _check_heads(path, node, model)
    return None
