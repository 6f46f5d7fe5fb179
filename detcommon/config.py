"""The project's config: the shared keys with their defaults, the checks that run before any
dataset is read or model built, and :func:`build_config`, which every entry point uses.

Each error names the key and the values it allows. Detectron2's yacs config already refuses a
value of the wrong type when it is merged; each project checks its own keys (its
`Project.check_config`, and its modules where they are built).
"""

import os
from typing import Sequence

import torch
from detectron2.config import get_cfg
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY

from .projects import projects

__all__ = ["add_common_config", "get_project_cfg", "build_config", "validate_config"]


def add_common_config(cfg):
    """Declares the project-wide keys on a Detectron2 config, in place."""
    # User datasets in COCO detection format, registered before training or evaluation:
    # a list of [NAME, JSON_FILE, IMAGE_DIR]; `train_net.py --dataset NAME JSON IMAGE_DIR` appends.
    cfg.DATASETS.REGISTER_COCO = []
    # Where the embedded shapes dataset is cached; "" = $SHAPES_DATASET_DIR or ~/.cache/...
    cfg.DATASETS.SHAPES_ROOT = ""
    # Training skips images that cannot be read (missing, truncated, not an image) with a
    # warning that counts them, instead of stopping with an error naming the file.
    # Evaluation always stops: a skipped image would change the AP.
    cfg.DATALOADER.SKIP_BAD_IMAGES = False
    # Keep model_best.pth, the best periodic evaluation by this result, e.g. "bbox/AP75"; "" = off.
    cfg.TEST.BEST_CHECKPOINT_METRIC = ""
    # "max" keeps the highest value of TEST.BEST_CHECKPOINT_METRIC (AP), "min" the lowest.
    cfg.TEST.BEST_CHECKPOINT_MODE = "max"


def get_project_cfg():
    """Detectron2's default config with the shared keys and every project's (detcommon.projects)."""
    cfg = get_cfg()
    add_common_config(cfg)
    for project in projects():
        project.add_config(cfg)
    return cfg


def build_config(
    config_file: str, opts: Sequence[str] = (), datasets: Sequence[Sequence[str]] = ()
):
    """
    The frozen, checked config of a run: `config_file` (YAML), then `datasets` appended to
    DATASETS.REGISTER_COCO, then `opts` (KEY VALUE ...); MODEL.DEVICE cpu without CUDA. Pure: it
    registers nothing and writes nothing (see detcommon.engine.setup_run).

    Args:
        config_file (str): a YAML config of configs/.
        opts (list[str]): KEY VALUE pairs, as on train_net.py's command line.
        datasets (list[list[str]]): [NAME, JSON_FILE, IMAGE_DIR] per dataset (`--dataset`).
    """
    cfg = get_project_cfg()
    cfg.merge_from_file(config_file)
    cfg.DATASETS.REGISTER_COCO = list(cfg.DATASETS.REGISTER_COCO) + [list(d) for d in datasets]
    cfg.merge_from_list(list(opts))
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    validate_config(cfg)
    cfg.freeze()
    return cfg


def validate_config(cfg):
    """Raises ValueError naming the key for a bad value or combination: the shared keys here,
    then each project's own check (detcommon.projects)."""
    _check_register_coco(cfg.DATASETS.REGISTER_COCO)
    root = cfg.DATASETS.SHAPES_ROOT
    if not isinstance(root, str) or (root and os.path.exists(root) and not os.path.isdir(root)):
        raise ValueError(
            f'DATASETS.SHAPES_ROOT must be a directory path or "" (default cache), got {root!r}'
        )
    if not isinstance(cfg.DATALOADER.SKIP_BAD_IMAGES, bool):
        raise ValueError(
            f"DATALOADER.SKIP_BAD_IMAGES must be True or False, got {cfg.DATALOADER.SKIP_BAD_IMAGES!r}"
        )
    _check_best_checkpoint(cfg)

    name = cfg.MODEL.ROI_BOX_HEAD.NAME
    if name not in ROI_BOX_HEAD_REGISTRY:
        allowed = sorted(n for n, _ in ROI_BOX_HEAD_REGISTRY)
        raise ValueError(
            f"MODEL.ROI_BOX_HEAD.NAME must be a registered box head, one of {allowed}; got {name!r}"
        )
    for project in projects():
        if project.check_config is not None:
            project.check_config(cfg)


def _check_register_coco(entries):
    """DATASETS.REGISTER_COCO: a list of [NAME, JSON_FILE, IMAGE_DIR] of non-empty strings."""
    for i, entry in enumerate(entries):
        if not (
            isinstance(entry, (list, tuple))
            and len(entry) == 3
            and all(isinstance(v, str) and v for v in entry)
        ):
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
