from detectron2.config import CfgNode as CN
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY

__all__ = ["add_doublehead_config", "check_doublehead_config"]


def add_doublehead_config(cfg):
    """
    Add the Double-Head keys (all under ``MODEL.DOUBLE_HEAD``) to ``cfg``.

    Defaults are Double-Head-Ext, the paper's best model (R-50 FPN: 40.3 AP): both heads
    also learn their unfocused task and the two classifiers are fused at test time.
    Vanilla Double-Head (39.8 AP) is LAMBDA_FC = LAMBDA_CONV = 1.0 with TEST_MODE "double".
    """
    _C = cfg
    _C.MODEL.DOUBLE_HEAD = CN()
    # Box head (a name in ROI_BOX_HEAD_REGISTRY) of the "fc" branch, the one focused on
    # classification. FastRCNNConvFCHead reads MODEL.ROI_BOX_HEAD (2 fc x 1024 in the paper).
    _C.MODEL.DOUBLE_HEAD.CLS_HEAD_NAME = "FastRCNNConvFCHead"
    # Box head of the "conv" branch, the one focused on box regression.
    _C.MODEL.DOUBLE_HEAD.REG_HEAD_NAME = "DoubleHeadConvHead"
    # The conv branch pools its RoI features from each proposal enlarged by this factor about
    # its centre (authors' code: --conv-bbox-expand 1.3; not in the paper). 1.0: pool once.
    _C.MODEL.DOUBLE_HEAD.CONV_ROI_SCALE = 1.3
    # How it pools the enlarged box: "original_level" = on the FPN level of the proposal itself,
    # not clipped (authors' PoolerNeighbor, MMDetection's roi_scale_factor); "enlarged_clipped" =
    # clipped to the image, on the level of the enlarged box (this project's earlier pooling).
    _C.MODEL.DOUBLE_HEAD.CONV_ROI_POOLING = "original_level"
    # w_fc and w_conv of Eq. 1 (Table 1 bottom: 2.0 / 2.5). 0 removes the branch entirely.
    _C.MODEL.DOUBLE_HEAD.LOSS_WEIGHT_FC = 2.0
    _C.MODEL.DOUBLE_HEAD.LOSS_WEIGHT_CONV = 2.5
    # lambda_fc of Eq. 2: the fc branch's loss is lambda_fc * cls + (1 - lambda_fc) * reg.
    # 0.7 = Double-Head-Ext; 1.0 = vanilla Double-Head (no fc box regressor).
    _C.MODEL.DOUBLE_HEAD.LAMBDA_FC = 0.7
    # lambda_conv of Eq. 3: the conv branch's loss is (1 - lambda_conv) * cls + lambda_conv * reg.
    # 0.8 = Double-Head-Ext; 1.0 = vanilla Double-Head (no conv classifier).
    _C.MODEL.DOUBLE_HEAD.LAMBDA_CONV = 0.8
    # Inference (Fig. 6): "conv" (conv cls + conv reg), "fc" (fc cls + fc reg),
    # "double" (fc cls + conv reg), "fused" (fused fc and conv scores + conv reg).
    _C.MODEL.DOUBLE_HEAD.TEST_MODE = "fused"
    # Score fusion of the "fused" mode (Table 3): "complementary" (Eq. 4), "average" or "max".
    _C.MODEL.DOUBLE_HEAD.FUSION = "complementary"
    # Modes that evaluation (train_net.py --eval-only) reports, one AP table each, from a single
    # run of backbone and heads per image, e.g. ["conv", "fc", "double", "fused"].
    # Empty: evaluate TEST_MODE only.
    _C.MODEL.DOUBLE_HEAD.EVAL_MODES = []
    # Inference speed-ups of the modes that score with the fc branch and box with the conv
    # branch. FAST_PATH ("double" mode): the conv branch runs only on the proposals whose best
    # foreground fc score reaches MODEL.ROI_HEADS.SCORE_THRESH_TEST; the detections are those of
    # the full path. (The "fc" and "conv" modes never run the branch they do not use.)
    _C.MODEL.DOUBLE_HEAD.FAST_PATH = True
    # "fused" mode, opt-in: the conv branch runs only on the proposals whose best foreground fc
    # score reaches this value. Not exact: fusion only raises scores (complementary, max), so a
    # proposal below SCORE_THRESH_TEST in fc may still be detected by the full path; measure the
    # AP it costs (docs/SPEED.md). 0.0: off.
    _C.MODEL.DOUBLE_HEAD.FUSED_PREFILTER_THRESH = 0.0

    # DoubleHeadConvHead (Fig. 5): an up-channel residual block, then NUM_BOTTLENECKS bottleneck
    # blocks, a non-local block in front of each of the first NUM_NONLOCAL of them, then average
    # pooling. The paper's choice (Table 2, "K = 5 with NL"): 2 bottlenecks, 2 non-local blocks.
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD = CN()
    # Channels of the head's residual stream and of its output vector.
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.CONV_DIM = 1024
    # Inner channels of the up-channel block (its 3x3 conv) and of each bottleneck.
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.BOTTLENECK_DIM = 256
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.NUM_BOTTLENECKS = 2
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.NUM_NONLOCAL = 2
    # Channels of the non-local block's theta, phi and g embeddings, and their number of groups.
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_DIM = 512
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_GROUPS = 4
    # How each non-local block starts as an identity: "zero_conv" = weight and bias of its last
    # 1x1 conv at 0, norm scale 1 (authors' _NonLocalBlockND_Group); "zero_norm" = last conv
    # without bias, norm scale 0 (this project's earlier init).
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_INIT = "zero_conv"
    # Normalization after every conv of the head (see detectron2.layers.get_norm).
    _C.MODEL.DOUBLE_HEAD.CONV_HEAD.NORM = "BN"


def check_doublehead_config(cfg):
    """Raises ValueError naming the key when a Double-Head model's branch names no registered box
    head (the other keys are checked where the heads are built)."""
    if cfg.MODEL.ROI_HEADS.NAME != "DoubleHeadROIHeads":
        return
    for key in ("CLS_HEAD_NAME", "REG_HEAD_NAME"):
        name = cfg.MODEL.DOUBLE_HEAD[key]
        if name not in ROI_BOX_HEAD_REGISTRY:
            allowed = sorted(n for n, _ in ROI_BOX_HEAD_REGISTRY)
            raise ValueError(
                f"MODEL.DOUBLE_HEAD.{key} must be a registered box head, one of {allowed}; got {name!r}"
            )
