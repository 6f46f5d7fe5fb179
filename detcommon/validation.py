"""Config checks that run in train_net.py's setup(), before any dataset is read or model built.

Each error names the key and the values it allows. Detectron2's yacs config already refuses a
value of the wrong type when it is merged; each project package checks its own keys when its
modules are built (`double_head`: the heads and the conv-head; `decoupled_rcnn`:
`check_decoupled_rcnn_config`). This module checks the shared keys, the box-head names, and
which modules must go together.
"""
import os

from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY

__all__ = ["validate_config"]


def validate_config(cfg):
    """Raises ValueError naming the key for a project key with a bad value or combination."""
    _check_register_coco(cfg.DATASETS.REGISTER_COCO)
    root = cfg.DATASETS.SHAPES_ROOT
    if not isinstance(root, str) or (root and os.path.exists(root) and not os.path.isdir(root)):
        raise ValueError(f"DATASETS.SHAPES_ROOT must be a directory path or \"\" (default cache), got {root!r}")
    if not isinstance(cfg.DATALOADER.SKIP_BAD_IMAGES, bool):
        raise ValueError(f"DATALOADER.SKIP_BAD_IMAGES must be True or False, got {cfg.DATALOADER.SKIP_BAD_IMAGES!r}")
    _check_best_checkpoint(cfg)

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
    for key, name in box_heads.items():
        if name not in ROI_BOX_HEAD_REGISTRY:
            allowed = sorted(n for n, _ in ROI_BOX_HEAD_REGISTRY)
            raise ValueError(f"{key} must be a registered box head, one of {allowed}; got {name!r}")


def _check_register_coco(entries):
    """DATASETS.REGISTER_COCO: a list of [NAME, JSON_FILE, IMAGE_DIR] of non-empty strings."""
    for i, entry in enumerate(entries):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(v, str) and v for v in entry)):
            raise ValueError(
                f"DATASETS.REGISTER_COCO[{i}] must be [NAME, JSON_FILE, IMAGE_DIR] (three non-empty "
                f"strings, as `--dataset NAME JSON_FILE IMAGE_DIR` gives), got {entry!r}"
            )


def _check_best_checkpoint(cfg):
    """TEST.BEST_CHECKPOINT_*: a mode of "max"/"min"; a metric needs periodic evaluation."""
    mode, metric = cfg.TEST.BEST_CHECKPOINT_MODE, cfg.TEST.BEST_CHECKPOINT_METRIC
    if mode not in ("max", "min"):
        raise ValueError(f"TEST.BEST_CHECKPOINT_MODE must be 'max' or 'min', got {mode!r}")
    if not metric:
        return
    if "/" not in metric:
        raise ValueError(
            f"TEST.BEST_CHECKPOINT_METRIC must name an evaluation result as TASK/COLUMN "
            f"(e.g. 'bbox/AP75'), got {metric!r}"
        )
    if cfg.TEST.EVAL_PERIOD <= 0:
        raise ValueError(
            f"TEST.BEST_CHECKPOINT_METRIC {metric!r} needs periodic evaluation: set TEST.EVAL_PERIOD > 0 "
            f"(got {cfg.TEST.EVAL_PERIOD}), or TEST.BEST_CHECKPOINT_METRIC '' to turn it off"
        )
    if not cfg.DATASETS.TEST:
        raise ValueError(
            f"TEST.BEST_CHECKPOINT_METRIC {metric!r} needs a dataset to evaluate: set DATASETS.TEST, "
            f"or TEST.BEST_CHECKPOINT_METRIC '' to turn it off"
        )
