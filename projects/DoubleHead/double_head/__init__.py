"""Double-Head and Double-Head-Ext (Wu et al., CVPR 2020) for Detectron2."""

from .config import add_doublehead_config
from .conv_head import DoubleHeadConvHead, NonLocalBlock, UpChannelBlock
from .outputs import FUSIONS, TEST_MODES, DoubleHeadOutputLayers, fuse_scores, loss_term_weights
from .roi_heads import CONV_ROI_POOLINGS, DoubleHeadROIHeads
from .evaluation import MultiModeEvaluator, MultiModeInference, multi_mode_evaluation
