"""Decoupled R-CNN (Wang et al.) with cascaded regression, on Detectron2."""

from .config import add_decoupled_rcnn_config, check_decoupled_rcnn_config
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
