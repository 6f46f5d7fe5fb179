"""Config keys of Decoupled R-CNN (Wang et al.), all under MODEL.DECOUPLED."""

import numbers

from detectron2.config import CfgNode as CN
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY

__all__ = [
    "add_decoupled_rcnn_config",
    "check_decoupled_rcnn_config",
    "check_decoupled_rcnn_model",
    "check_decoupled_roi_heads_config",
    "check_decoupled_rpn_config",
]

# Values of MODEL.DECOUPLED.REG_LOSS_NORMALIZER and MODEL.DECOUPLED.TEST_CLASS_BOXES.
REG_LOSS_NORMALIZERS = ("fixed", "num_samples")
TEST_CLASS_BOXES = ("auto", "per_class", "argmax")


def add_decoupled_rcnn_config(cfg):
    """Declares MODEL.DECOUPLED on a Detectron2 config, in place, with the authors' defaults.

    The defaults describe plain Decoupled R-CNN (one regressor) as the authors' COCO code
    trains and tests it; the 3-stage cascade sets NUM_REG_STAGES and the two per-stage lists
    together (see configs/drcnn_cascade_R50_FPN_1x.yaml).
    """
    _C = cfg
    _C.MODEL.DECOUPLED = CN()
    # NMS threshold of the RPN's second, regression proposal set (training only; Table III).
    # The classification set keeps MODEL.RPN.NMS_THRESH (0.7).
    _C.MODEL.DECOUPLED.NMS_THRESH_REG = 0.85
    # Most positive RoIs per image sampled for each regression stage (positives only).
    _C.MODEL.DECOUPLED.REG_BATCH_SIZE_PER_IMAGE = 512
    # True: classifier and first regressor share one trunk (the Table II ablation).
    _C.MODEL.DECOUPLED.SHARE_FC = False
    # ROI_BOX_HEAD_REGISTRY name of the first regressor's trunk ("DoubleHeadConvHead": Table XI).
    _C.MODEL.DECOUPLED.REG_HEAD_NAME = "FastRCNNConvFCHead"
    # Regression stages: 1 = Decoupled R-CNN, 3 = the paper's cascaded regression (Table IV).
    _C.MODEL.DECOUPLED.NUM_REG_STAGES = 1
    # Box2BoxTransform weights per stage; the cascade uses
    # ((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)).
    _C.MODEL.DECOUPLED.REG_STAGE_BBOX_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0),)
    # Loss weight per regression stage; the cascade uses (1.0, 0.5, 0.25).
    _C.MODEL.DECOUPLED.REG_STAGE_LOSS_WEIGHTS = (1.0,)
    # Multiplies every stage's regression loss. With REG_LOSS_NORMALIZER "fixed", Eq. 8's lambda
    # (Table VI) is this factor x 512 / REG_LOSS_NORMALIZER_PER_IMAGE: the authors' code has no
    # such factor, it divides by 512 / lambda RoIs per image (1024 on COCO, for one regressor
    # and for the cascade); with "num_samples" it is lambda itself.
    _C.MODEL.DECOUPLED.REG_LOSS_LAMBDA = 1.0
    # Regression loss: "l1" (paper) or "smooth_l1".
    _C.MODEL.DECOUPLED.REG_LOSS_TYPE = "l1"
    # Beta of the smooth-L1 loss; used only when REG_LOSS_TYPE is "smooth_l1".
    _C.MODEL.DECOUPLED.SMOOTH_L1_BETA = 1.0
    # Divisor of each stage's summed regression loss: "fixed" = REG_LOSS_NORMALIZER_PER_IMAGE x
    # images (the authors' code); "num_samples" = the stage's sampled positives.
    _C.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "fixed"
    # RoIs per image of the "fixed" divisor: the authors' padded sample of 512 classification +
    # 512 regression RoIs on COCO (1024), for every stage; their VOC setting is 512.
    _C.MODEL.DECOUPLED.REG_LOSS_NORMALIZER_PER_IMAGE = 1024
    # True: ground-truth boxes join the regression proposals too (the classification proposals
    # always get them, MODEL.ROI_HEADS.PROPOSAL_APPEND_GT); the authors add them to neither.
    _C.MODEL.DECOUPLED.REG_PROPOSAL_APPEND_GT = False
    # The first regression stage pools each RoI enlarged by this factor about its centre, on the
    # FPN level of the original RoI (1.3: the authors' Table XI conv-head); later stages unscaled.
    _C.MODEL.DECOUPLED.REG_ROI_SCALE = 1.0
    # Inference: regress only proposals whose best foreground score reaches
    # MODEL.ROI_HEADS.SCORE_THRESH_TEST (the others cannot be detected): same detections, faster.
    _C.MODEL.DECOUPLED.FAST_PATH = True
    # Regression stage whose boxes are output at test time; 0 = the last one.
    _C.MODEL.DECOUPLED.TEST_STAGE = 0
    # Test boxes: "per_class" = every class its own box from the class-specific first stage
    # (Fast R-CNN decoding; needs the first stage as the output stage); "argmax" = one box per
    # proposal, stage 1 with the predicted class, later stages on it; "auto" = "per_class" for
    # one regression stage, "argmax" for a cascade (both as the authors).
    _C.MODEL.DECOUPLED.TEST_CLASS_BOXES = "auto"


def check_decoupled_rcnn_config(cfg):
    """Raises ValueError, naming the key, for an inconsistent MODEL.DECOUPLED."""
    check_decoupled_rpn_config(cfg)
    check_decoupled_roi_heads_config(cfg)


def check_decoupled_rpn_config(cfg):
    """Raises ValueError, naming the key, for a bad MODEL.DECOUPLED key that DecoupledRPN reads."""
    d = cfg.MODEL.DECOUPLED
    if not 0.0 < d.NMS_THRESH_REG <= 1.0:
        raise ValueError(
            f"MODEL.DECOUPLED.NMS_THRESH_REG must be in (0, 1], got {d.NMS_THRESH_REG}"
        )
    if d.NMS_THRESH_REG < cfg.MODEL.RPN.NMS_THRESH:
        raise ValueError(
            f"MODEL.DECOUPLED.NMS_THRESH_REG ({d.NMS_THRESH_REG}) must not be below "
            f"MODEL.RPN.NMS_THRESH ({cfg.MODEL.RPN.NMS_THRESH}): regression wants the denser set"
        )


def check_decoupled_roi_heads_config(cfg):
    """Raises ValueError, naming the key, for an inconsistent MODEL.DECOUPLED key that
    DecoupledROIHeads reads."""
    d = cfg.MODEL.DECOUPLED
    num_stages = d.NUM_REG_STAGES
    if d.REG_BATCH_SIZE_PER_IMAGE < 1:
        raise ValueError(
            "MODEL.DECOUPLED.REG_BATCH_SIZE_PER_IMAGE must be >= 1, "
            f"got {d.REG_BATCH_SIZE_PER_IMAGE}"
        )
    if num_stages < 1:
        raise ValueError(f"MODEL.DECOUPLED.NUM_REG_STAGES must be >= 1, got {num_stages}")
    for key in ("REG_STAGE_BBOX_REG_WEIGHTS", "REG_STAGE_LOSS_WEIGHTS"):
        if len(d[key]) != num_stages:
            raise ValueError(
                f"MODEL.DECOUPLED.{key} has {len(d[key])} entries but "
                f"MODEL.DECOUPLED.NUM_REG_STAGES is {num_stages}"
            )
    for i, weights in enumerate(d.REG_STAGE_BBOX_REG_WEIGHTS):
        if len(weights) != 4 or not all(isinstance(w, numbers.Real) and w > 0 for w in weights):
            raise ValueError(
                f"MODEL.DECOUPLED.REG_STAGE_BBOX_REG_WEIGHTS[{i}] must be 4 positive numbers "
                f"(wx, wy, ww, wh), got {weights!r}"
            )
    for i, weight in enumerate(d.REG_STAGE_LOSS_WEIGHTS):
        if not isinstance(weight, numbers.Real) or weight < 0:
            raise ValueError(
                f"MODEL.DECOUPLED.REG_STAGE_LOSS_WEIGHTS[{i}] must be a number >= 0, got {weight!r}"
            )
    if d.SMOOTH_L1_BETA < 0:
        raise ValueError(f"MODEL.DECOUPLED.SMOOTH_L1_BETA must be >= 0, got {d.SMOOTH_L1_BETA}")
    if not 0 <= d.TEST_STAGE <= num_stages:
        raise ValueError(
            f"MODEL.DECOUPLED.TEST_STAGE must be in [0, NUM_REG_STAGES={num_stages}] "
            f"(0 = last), got {d.TEST_STAGE}"
        )
    if d.REG_LOSS_LAMBDA < 0:
        raise ValueError(f"MODEL.DECOUPLED.REG_LOSS_LAMBDA must be >= 0, got {d.REG_LOSS_LAMBDA}")
    if d.REG_LOSS_TYPE not in ("l1", "smooth_l1"):
        raise ValueError(
            f"MODEL.DECOUPLED.REG_LOSS_TYPE must be 'l1' or 'smooth_l1', got {d.REG_LOSS_TYPE!r}"
        )
    if d.REG_LOSS_NORMALIZER == "batch_size":
        raise ValueError(
            "MODEL.DECOUPLED.REG_LOSS_NORMALIZER 'batch_size' was replaced: write "
            "REG_LOSS_NORMALIZER 'fixed' and REG_LOSS_NORMALIZER_PER_IMAGE "
            f"{d.REG_BATCH_SIZE_PER_IMAGE} (REG_BATCH_SIZE_PER_IMAGE) for the same divisor"
        )
    if d.REG_LOSS_NORMALIZER not in REG_LOSS_NORMALIZERS:
        raise ValueError(
            f"MODEL.DECOUPLED.REG_LOSS_NORMALIZER must be one of {REG_LOSS_NORMALIZERS}, "
            f"got {d.REG_LOSS_NORMALIZER!r}"
        )
    if not d.REG_LOSS_NORMALIZER_PER_IMAGE > 0:
        raise ValueError(
            "MODEL.DECOUPLED.REG_LOSS_NORMALIZER_PER_IMAGE must be > 0, got "
            f"{d.REG_LOSS_NORMALIZER_PER_IMAGE}: the authors use 1024 on COCO (512 + 512 RoIs)"
        )
    if not d.REG_ROI_SCALE > 0:
        raise ValueError(
            f"MODEL.DECOUPLED.REG_ROI_SCALE must be > 0, got {d.REG_ROI_SCALE}: use 1.0 (the "
            "RoIs as proposed) or 1.3 (the authors' Table XI conv-head)"
        )
    if d.TEST_CLASS_BOXES not in TEST_CLASS_BOXES:
        raise ValueError(
            f"MODEL.DECOUPLED.TEST_CLASS_BOXES must be one of {TEST_CLASS_BOXES}, "
            f"got {d.TEST_CLASS_BOXES!r}"
        )
    test_stage = d.TEST_STAGE or num_stages
    if d.TEST_CLASS_BOXES == "per_class" and test_stage != 1:
        raise ValueError(
            "MODEL.DECOUPLED.TEST_CLASS_BOXES 'per_class' outputs the class-specific first "
            f"stage's boxes, but MODEL.DECOUPLED.TEST_STAGE {d.TEST_STAGE} outputs stage "
            f"{test_stage}, whose class-agnostic regressor refines one box per proposal: set "
            "TEST_CLASS_BOXES 'argmax' (or 'auto'), or TEST_STAGE 1"
        )
    if d.SHARE_FC and d.REG_HEAD_NAME != cfg.MODEL.ROI_BOX_HEAD.NAME:
        raise ValueError(
            "MODEL.DECOUPLED.SHARE_FC shares the classifier's trunk with the first regressor, so "
            f"MODEL.DECOUPLED.REG_HEAD_NAME ({d.REG_HEAD_NAME}) must equal "
            f"MODEL.ROI_BOX_HEAD.NAME ({cfg.MODEL.ROI_BOX_HEAD.NAME})"
        )


def check_decoupled_rcnn_model(cfg):
    """Raises ValueError naming the key when the Decoupled R-CNN modules do not go together or
    MODEL.DECOUPLED is inconsistent (nothing to check for other models)."""
    decoupled = cfg.MODEL.ROI_HEADS.NAME == "DecoupledROIHeads"
    if decoupled != (cfg.MODEL.PROPOSAL_GENERATOR.NAME == "DecoupledRPN"):
        raise ValueError(
            "MODEL.ROI_HEADS.NAME 'DecoupledROIHeads' and MODEL.PROPOSAL_GENERATOR.NAME 'DecoupledRPN' "
            "go together (the heads train on the RPN's two proposal sets), got "
            f"{cfg.MODEL.ROI_HEADS.NAME!r} and {cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}"
        )
    if not decoupled:
        return
    name = cfg.MODEL.DECOUPLED.REG_HEAD_NAME
    if name not in ROI_BOX_HEAD_REGISTRY:
        allowed = sorted(n for n, _ in ROI_BOX_HEAD_REGISTRY)
        raise ValueError(
            f"MODEL.DECOUPLED.REG_HEAD_NAME must be a registered box head, one of {allowed}; got {name!r}"
        )
    check_decoupled_rcnn_config(cfg)
