"""Config checks that run in train_net.py's setup(), before any dataset is read or model built.

Each error names the key and the values it allows. Detectron2's yacs config already refuses a
value of the wrong type when it is merged from a file or the command line; the project
packages check their keys when their modules are built (Double-Head: loss weights, lambdas,
TEST_MODE, EVAL_MODES, FUSION, CONV_ROI_SCALE; Decoupled R-CNN: check_decoupled_rcnn_config).
This module checks the rest: the shared keys, the box-head names, the conv-head's sizes, the
Decoupled R-CNN per-stage values and which modules must go together.
"""
import numbers
import os

from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY

__all__ = ["validate_config", "check_register_coco"]

# The names detectron2.layers.get_norm accepts ("" = no normalization).
NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")


def validate_config(cfg):
    """Raises ValueError naming the key for a project key with a bad value or combination."""
    check_register_coco(cfg.DATASETS.REGISTER_COCO)
    root = cfg.DATASETS.SHAPES_ROOT
    if not isinstance(root, str) or (root and os.path.exists(root) and not os.path.isdir(root)):
        raise ValueError(f"DATASETS.SHAPES_ROOT must be a directory path or \"\" (default cache), got {root!r}")
    if not isinstance(cfg.DATALOADER.SKIP_BAD_IMAGES, bool):
        raise ValueError(f"DATALOADER.SKIP_BAD_IMAGES must be True or False, got {cfg.DATALOADER.SKIP_BAD_IMAGES!r}")

    box_heads = {"MODEL.ROI_BOX_HEAD.NAME": cfg.MODEL.ROI_BOX_HEAD.NAME}
    if cfg.MODEL.ROI_HEADS.NAME == "DoubleHeadROIHeads":
        box_heads = {f"MODEL.DOUBLE_HEAD.{k}": cfg.MODEL.DOUBLE_HEAD[k] for k in ("CLS_HEAD_NAME", "REG_HEAD_NAME")}
    decoupled = cfg.MODEL.ROI_HEADS.NAME == "DecoupledROIHeads"
    if decoupled != (cfg.MODEL.PROPOSAL_GENERATOR.NAME == "DecoupledRPN"):
        raise ValueError(
            "MODEL.ROI_HEADS.NAME 'DecoupledROIHeads' and MODEL.PROPOSAL_GENERATOR.NAME 'DecoupledRPN' "
            "go together (the heads train on the RPN's two proposal sets), got "
            f"{cfg.MODEL.ROI_HEADS.NAME!r} and {cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}"
        )
    if decoupled:
        box_heads["MODEL.DECOUPLED.REG_HEAD_NAME"] = cfg.MODEL.DECOUPLED.REG_HEAD_NAME
        _check_decoupled_stages(cfg.MODEL.DECOUPLED)
    for key, name in box_heads.items():
        if name not in ROI_BOX_HEAD_REGISTRY:
            allowed = sorted(n for n, _ in ROI_BOX_HEAD_REGISTRY)
            raise ValueError(f"{key} must be a registered box head, one of {allowed}; got {name!r}")
    if "DoubleHeadConvHead" in box_heads.values():
        _check_conv_head(cfg.MODEL.DOUBLE_HEAD.CONV_HEAD)


def check_register_coco(entries):
    """DATASETS.REGISTER_COCO: a list of [NAME, JSON_FILE, IMAGE_DIR] of non-empty strings."""
    for i, entry in enumerate(entries):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(v, str) and v for v in entry)):
            raise ValueError(
                f"DATASETS.REGISTER_COCO[{i}] must be [NAME, JSON_FILE, IMAGE_DIR] (three non-empty "
                f"strings, as `--dataset NAME JSON_FILE IMAGE_DIR` gives), got {entry!r}"
            )


def _int_at_least(key, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _check_conv_head(head):
    prefix = "MODEL.DOUBLE_HEAD.CONV_HEAD."
    for key, minimum in (("CONV_DIM", 1), ("BOTTLENECK_DIM", 1), ("NUM_BOTTLENECKS", 0), ("NONLOCAL_DIM", 1),
                         ("NONLOCAL_GROUPS", 1)):
        _int_at_least(prefix + key, head[key], minimum)
    if not 0 <= head.NUM_NONLOCAL <= head.NUM_BOTTLENECKS:
        raise ValueError(
            f"{prefix}NUM_NONLOCAL (one non-local block before each of the first bottlenecks) must be in "
            f"[0, {prefix}NUM_BOTTLENECKS={head.NUM_BOTTLENECKS}], got {head.NUM_NONLOCAL!r}"
        )
    if head.NUM_NONLOCAL and head.NONLOCAL_DIM % head.NONLOCAL_GROUPS:
        raise ValueError(
            f"{prefix}NONLOCAL_DIM ({head.NONLOCAL_DIM}) must be a multiple of {prefix}NONLOCAL_GROUPS "
            f"({head.NONLOCAL_GROUPS})"
        )
    if head.NORM not in NORMS:
        raise ValueError(f"{prefix}NORM must be one of {list(NORMS)}, got {head.NORM!r}")
    if head.NORM == "GN":
        for key in ("CONV_DIM", "BOTTLENECK_DIM", "NONLOCAL_DIM"):
            if head[key] % 32:
                raise ValueError(f"{prefix}NORM 'GN' uses 32 groups: {prefix}{key} must be a multiple of 32, "
                                 f"got {head[key]}")


def _check_decoupled_stages(d):
    """The per-stage values that check_decoupled_rcnn_config leaves alone."""
    prefix = "MODEL.DECOUPLED."
    for i, weights in enumerate(d.REG_STAGE_BBOX_REG_WEIGHTS):
        if not all(isinstance(w, numbers.Real) and w > 0 for w in weights):
            raise ValueError(
                f"{prefix}REG_STAGE_BBOX_REG_WEIGHTS[{i}] must be 4 positive numbers (wx, wy, ww, wh), "
                f"got {weights!r}"
            )
    for i, weight in enumerate(d.REG_STAGE_LOSS_WEIGHTS):
        if not isinstance(weight, numbers.Real) or weight < 0:
            raise ValueError(f"{prefix}REG_STAGE_LOSS_WEIGHTS[{i}] must be a number >= 0, got {weight!r}")
    if not isinstance(d.SMOOTH_L1_BETA, numbers.Real) or d.SMOOTH_L1_BETA < 0:
        raise ValueError(f"{prefix}SMOOTH_L1_BETA must be a number >= 0, got {d.SMOOTH_L1_BETA!r}")
