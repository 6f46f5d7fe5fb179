"""Decoupled R-CNN (Wang et al.) with cascaded regression, on Detectron2."""

from detcommon.projects import Project

from .config import (
    add_decoupled_rcnn_config,
    check_decoupled_rcnn_config,
    check_decoupled_rcnn_model,
)
from .lazy import check_lazy_node
from .roi_heads import DecoupledROIHeads
from .rpn import DecoupledRPN, split_decoupled_proposals
from .sampling import sample_regression_proposals

__all__ = [
    "add_decoupled_rcnn_config",
    "check_decoupled_rcnn_config",
    "DecoupledROIHeads",
    "DecoupledRPN",
    "split_decoupled_proposals",
    "sample_regression_proposals",
]

# What detcommon needs of this package (setup.cfg, entry point group detcommon.projects).
PROJECT = Project(
    "decoupled_rcnn",
    add_decoupled_rcnn_config,
    check_decoupled_rcnn_model,
    check_lazy_node=check_lazy_node,
)
