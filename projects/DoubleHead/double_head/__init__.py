"""Double-Head and Double-Head-Ext (Wu et al., CVPR 2020) for Detectron2."""

from detcommon.projects import Project

from .config import add_doublehead_config, check_doublehead_config
from .conv_head import DoubleHeadConvHead, NonLocalBlock, UpChannelBlock
from .evaluation import MultiModeEvaluator, MultiModeInference, multi_mode_evaluation
from .lazy import check_lazy_node, lazy_evaluation
from .outputs import FUSIONS, TEST_MODES, DoubleHeadOutputLayers, fuse_scores, loss_term_weights
from .roi_heads import CONV_ROI_POOLINGS, DoubleHeadROIHeads

__all__ = [
    "add_doublehead_config", "check_doublehead_config", "DoubleHeadConvHead", "NonLocalBlock",
    "UpChannelBlock", "MultiModeEvaluator", "MultiModeInference", "multi_mode_evaluation", "FUSIONS",
    "TEST_MODES", "DoubleHeadOutputLayers", "fuse_scores", "loss_term_weights", "CONV_ROI_POOLINGS",
    "DoubleHeadROIHeads", "PROJECT",
]  # fmt: skip


def _evaluation(cfg, model, build_evaluator):
    """Every mode of MODEL.DOUBLE_HEAD.EVAL_MODES in one pass; None when it is empty."""
    return (
        multi_mode_evaluation(cfg, model, build_evaluator)
        if cfg.MODEL.DOUBLE_HEAD.EVAL_MODES
        else None
    )


# What detcommon needs of this package (setup.cfg, entry point group detcommon.projects).
PROJECT = Project(
    "double_head",
    add_doublehead_config,
    check_doublehead_config,
    _evaluation,
    check_lazy_node=check_lazy_node,
    lazy_evaluation=lazy_evaluation,
)
