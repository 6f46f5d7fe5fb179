"""Double-Head in LazyConfig runs (configs/lazy/, run by detcommon.engine.lazy): the loss-weight callable
the configs instantiate, the MODEL.DOUBLE_HEAD checks on the config's nodes, and the evaluation
of several inference modes in one pass. Registered as this package's `Project.check_lazy_node`
and `Project.lazy_evaluation`.

The MODEL.DOUBLE_HEAD keys, on a DoubleHeadROIHeads node at `model.roi_heads`:

    LOSS_WEIGHT_FC, LAMBDA_FC          model.roi_heads.box_predictors.fc.loss_weight.loss_weight_fc, .lambda_fc
    LOSS_WEIGHT_CONV, LAMBDA_CONV      model.roi_heads.box_predictors.conv.loss_weight.loss_weight_conv, .lambda_conv
    TEST_MODE, FUSION                  model.roi_heads.test_mode, .fusion
    EVAL_MODES                         model.roi_heads.eval_modes
    CONV_ROI_SCALE, CONV_ROI_POOLING   model.roi_heads.conv_roi_scale, .conv_roi_pooling
    FAST_PATH, FUSED_PREFILTER_THRESH  model.roi_heads.fast_path, .fused_prefilter_thresh
    CONV_HEAD.*                        <DoubleHeadConvHead node>.* (conv_dim, bottleneck_dim, ...)
"""

from typing import Callable, Dict, Optional, Tuple

from detectron2.config import get_cfg
from torch.nn.parallel import DistributedDataParallel

from detcommon.engine.lazy import lazy_keys, node_target, plain_value

from .config import add_doublehead_config
from .conv_head import DoubleHeadConvHead
from .evaluation import MultiModeEvaluator, MultiModeInference
from .outputs import check_test_mode, loss_term_weights
from .roi_heads import DoubleHeadROIHeads

__all__ = ["double_head_loss_weight", "check_lazy_node", "lazy_evaluation"]

_CONV_HEAD_KEYS = ("CONV_DIM", "BOTTLENECK_DIM", "NUM_BOTTLENECKS", "NUM_NONLOCAL", "NONLOCAL_DIM",
                   "NONLOCAL_GROUPS", "NONLOCAL_INIT", "NORM")  # fmt: skip
_HEADS_KEYS = ("TEST_MODE", "EVAL_MODES", "FUSION", "FUSED_PREFILTER_THRESH", "CONV_ROI_SCALE", "CONV_ROI_POOLING",
               "FAST_PATH")  # fmt: skip


def _view():
    """Detectron2's default config with MODEL.DOUBLE_HEAD's defaults, for the YAML path's checks."""
    view = get_cfg()
    add_doublehead_config(view)
    return view


def double_head_loss_weight(
    *, branch, loss_weight_fc=None, lambda_fc=None, loss_weight_conv=None, lambda_conv=None
):
    """The `loss_weight` of one branch's DoubleHeadOutputLayers, {"loss_cls": w, "loss_box_reg": w}
    (Eq. 1-3): :func:`loss_term_weights` of the branch's two MODEL.DOUBLE_HEAD keys (loss_weight_fc
    and lambda_fc for branch "fc", loss_weight_conv and lambda_conv for "conv"), with the YAML
    path's products and checks."""
    given = {"fc": (loss_weight_fc, lambda_fc), "conv": (loss_weight_conv, lambda_conv)}
    if branch not in given:
        raise ValueError(f"double_head_loss_weight: branch must be 'fc' or 'conv', got {branch!r}")
    if None in given[branch]:
        raise ValueError(
            f"double_head_loss_weight(branch={branch!r}) needs loss_weight_{branch} and lambda_{branch} "
            f"(MODEL.DOUBLE_HEAD.LOSS_WEIGHT_{branch.upper()}, LAMBDA_{branch.upper()}), got {given[branch]}"
        )
    view = _view()
    dh = view.MODEL.DOUBLE_HEAD
    dh[f"LOSS_WEIGHT_{branch.upper()}"], dh[f"LAMBDA_{branch.upper()}"] = given[branch]
    return loss_term_weights(view)[branch]


def _conv_head_keys(path: str) -> Dict[str, str]:
    """MODEL.DOUBLE_HEAD.CONV_HEAD keys -> the arguments of the DoubleHeadConvHead node at `path`."""
    return {f"MODEL.DOUBLE_HEAD.CONV_HEAD.{k}": f"{path}.{k.lower()}" for k in _CONV_HEAD_KEYS}


def _heads_keys(path: str) -> Dict[str, str]:
    """MODEL.DOUBLE_HEAD keys -> the lazy keys of the DoubleHeadROIHeads node at `path`, with the
    bare LOSS_WEIGHT_* / LAMBDA_* names of check_test_mode's formulas."""
    keys = {f"MODEL.DOUBLE_HEAD.{k}": f"{path}.{k.lower()}" for k in _HEADS_KEYS}
    for branch in ("fc", "conv"):
        for key in (f"LOSS_WEIGHT_{branch.upper()}", f"LAMBDA_{branch.upper()}"):
            keys[f"MODEL.DOUBLE_HEAD.{key}"] = (
                f"{path}.box_predictors.{branch}.loss_weight.{key.lower()}"
            )
            keys[key] = key.lower()
    return keys


def _check_heads(path, node):
    """Loss products and test / evaluation modes of a DoubleHeadROIHeads node, as MODEL.DOUBLE_HEAD's."""
    keys = _heads_keys(path)
    weights = {}
    for branch, predictor in node.box_predictors.items():
        if branch == "_target_":
            continue
        loss_weight = predictor.loss_weight
        with lazy_keys(keys):
            if node_target(loss_weight) is double_head_loss_weight:
                weights[branch] = double_head_loss_weight(
                    **{k: v for k, v in loss_weight.items() if k != "_target_"}
                )
            else:
                weights[branch] = dict(plain_value(loss_weight))
    with lazy_keys(keys):
        check_test_mode(node.get("test_mode", "fused"), weights)
        for mode in plain_value(node.get("eval_modes", [])):
            check_test_mode(mode, weights, key="MODEL.DOUBLE_HEAD.EVAL_MODES")
    return keys


def _check_conv_head(path, node):
    """MODEL.DOUBLE_HEAD.CONV_HEAD's checks (DoubleHeadConvHead.from_config) on a DoubleHeadConvHead node."""
    view = _view()
    for key in view.MODEL.DOUBLE_HEAD.CONV_HEAD:
        if key.lower() in node:
            view.MODEL.DOUBLE_HEAD.CONV_HEAD[key] = node[key.lower()]
    keys = _conv_head_keys(path)
    with lazy_keys(keys):
        DoubleHeadConvHead.from_config(view, input_shape=None)
    return keys


def check_lazy_node(path: str, node, model) -> Optional[Dict[str, str]]:
    """`Project.check_lazy_node`: the YAML path's MODEL.DOUBLE_HEAD checks on a DoubleHeadROIHeads
    or DoubleHeadConvHead node at `path` (errors naming its lazy keys); returns the node's
    {YAML key: lazy key}, None for a node of another class."""
    target = node_target(node)
    if target is DoubleHeadROIHeads:
        return _check_heads(path, node)
    if target is DoubleHeadConvHead:
        return _check_conv_head(path, node)
    return None


def lazy_evaluation(
    model, build_evaluator: Callable
) -> Optional[Tuple[MultiModeInference, MultiModeEvaluator]]:
    """`Project.lazy_evaluation`: with model.roi_heads.eval_modes (MODEL.DOUBLE_HEAD.EVAL_MODES), one
    AP table per mode from one run of the heads per image, each mode's evaluator from
    `build_evaluator(mode)` (writing under <dataset>/<mode>); None without eval_modes."""
    module = model.module if isinstance(model, DistributedDataParallel) else model
    modes = list(getattr(getattr(module, "roi_heads", None), "eval_modes", None) or [])
    if not modes:
        return None
    return MultiModeInference(model, modes), MultiModeEvaluator(build_evaluator, modes)
