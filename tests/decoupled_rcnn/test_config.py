"""MODEL.DECOUPLED: validation at build time and the project's config files."""

import glob
import os

import pytest
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_proposal_generator, build_roi_heads

from decoupled_rcnn import add_decoupled_rcnn_config, check_decoupled_rcnn_config
from tests.conftest import REPO

SHAPE = {"p2": ShapeSpec(channels=8, stride=4)}
CASCADE = {
    "NUM_REG_STAGES": 3,
    "REG_STAGE_BBOX_REG_WEIGHTS": ((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)),
    "REG_STAGE_LOSS_WEIGHTS": (1.0, 0.5, 0.25),
}


def _cfg(**decoupled):
    cfg = get_cfg()
    add_decoupled_rcnn_config(cfg)
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "DecoupledRPN"
    cfg.MODEL.RPN.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_HEADS.NAME = "DecoupledROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 8
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 2
    cfg.MODEL.DECOUPLED.merge_from_list([x for kv in decoupled.items() for x in kv])
    return cfg


def test_defaults_are_the_paper_single_regressor():
    d = _cfg().MODEL.DECOUPLED
    assert (d.NMS_THRESH_REG, d.REG_BATCH_SIZE_PER_IMAGE, d.NUM_REG_STAGES) == (0.85, 512, 1)
    assert (d.REG_LOSS_LAMBDA, d.REG_LOSS_TYPE, d.SHARE_FC, d.TEST_STAGE) == (1.0, "l1", False, 0)
    # The authors' code: L1 sum / (1024 x images), no ground truth among the regression
    # proposals, class-specific boxes for one regressor, RoIs pooled as proposed.
    assert (d.REG_LOSS_NORMALIZER, d.REG_LOSS_NORMALIZER_PER_IMAGE) == ("fixed", 1024)
    assert (d.REG_PROPOSAL_APPEND_GT, d.TEST_CLASS_BOXES, d.REG_ROI_SCALE) == (False, "auto", 1.0)
    build_proposal_generator(_cfg(), SHAPE)
    build_roi_heads(_cfg(), SHAPE)


RPN_CASES = [
    ({"NMS_THRESH_REG": 0.0}, "NMS_THRESH_REG"),
    ({"NMS_THRESH_REG": 1.2}, "NMS_THRESH_REG"),
    ({"NMS_THRESH_REG": 0.6}, "MODEL.RPN.NMS_THRESH"),
]
ROI_HEADS_CASES = [
    ({"NUM_REG_STAGES": 2}, "REG_STAGE_BBOX_REG_WEIGHTS"),
    ({"REG_STAGE_BBOX_REG_WEIGHTS": ((10.0, 10.0, 5.0),)}, "REG_STAGE_BBOX_REG_WEIGHTS"),
    ({"TEST_STAGE": 2}, "TEST_STAGE"),
    ({"SHARE_FC": True, "REG_HEAD_NAME": "DoubleHeadConvHead"}, "REG_HEAD_NAME"),
    ({"REG_LOSS_NORMALIZER": "batch_size"}, "REG_LOSS_NORMALIZER_PER_IMAGE 512"),
    (dict(CASCADE, TEST_CLASS_BOXES="per_class"), "TEST_CLASS_BOXES 'per_class'"),
]


@pytest.mark.parametrize(
    "build, settings, key",
    [(build_proposal_generator, *c) for c in RPN_CASES]
    + [(build_roi_heads, *c) for c in ROI_HEADS_CASES],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_each_builder_refuses_a_bad_key_it_reads(build, settings, key):
    """The RPN and the RoI heads each check the MODEL.DECOUPLED keys they read, so the modules
    are safe without train_net.py's checks; the bad value of every key, with the allowed values
    in the message, is tests/detcommon/test_config.py's table."""
    with pytest.raises(ValueError, match=key):
        build(_cfg(**settings), SHAPE)
    with pytest.raises(ValueError, match=key):
        check_decoupled_rcnn_config(_cfg(**settings))


@pytest.mark.parametrize("settings, key", ROI_HEADS_CASES)
def test_the_rpn_does_not_check_the_heads_keys(settings, key):
    build_proposal_generator(_cfg(**settings), SHAPE)


def test_a_model_build_checks_each_key_once(monkeypatch):
    """Building the RPN and the RoI heads runs each part of the check once (not the whole
    check twice)."""
    from decoupled_rcnn import roi_heads, rpn

    calls = []
    for module, name in (
        (rpn, "check_decoupled_rpn_config"),
        (roi_heads, "check_decoupled_roi_heads_config"),
    ):
        check = getattr(module, name)
        monkeypatch.setattr(module, name, lambda cfg, n=name, c=check: calls.append(n) or c(cfg))
    build_proposal_generator(_cfg(), SHAPE)
    build_roi_heads(_cfg(), SHAPE)
    assert calls == ["check_decoupled_rpn_config", "check_decoupled_roi_heads_config"]


def test_per_class_boxes_of_a_cascade_need_test_stage_1():
    build_roi_heads(_cfg(**CASCADE, TEST_CLASS_BOXES="per_class", TEST_STAGE=1), SHAPE)


CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "drcnn*.yaml"), recursive=True))
FPN_BASELINE = os.path.join(REPO, "configs", "drcnn_faster_rcnn_R50_FPN_1x.yaml")


def _load(path):
    cfg = get_cfg()
    add_decoupled_rcnn_config(cfg)
    if "drcnn_dh" in path:
        pytest.importorskip("double_head").add_doublehead_config(cfg)
    cfg.merge_from_file(path)
    return cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_project_configs_load_and_validate(path):
    cfg = _load(path)
    check_decoupled_rcnn_config(cfg)
    decoupled = path != FPN_BASELINE
    assert (cfg.MODEL.PROPOSAL_GENERATOR.NAME == "DecoupledRPN") == decoupled
    assert (cfg.MODEL.ROI_HEADS.NAME == "DecoupledROIHeads") == decoupled
    # Table XI: the conv-head regressor pools 1.3x enlarged RoIs; the fc regressors do not.
    assert cfg.MODEL.DECOUPLED.REG_ROI_SCALE == (1.3 if "drcnn_dh" in path else 1.0)


COCO_CONFIGS = [p for p in CONFIGS if os.path.dirname(p).endswith("configs")]
# MMDetection 2.4's schedules at 16 images, one COCO epoch = 7330 iterations: (steps, iterations).
SCHEDULES = {"1x": ((8 * 7330, 11 * 7330), 12 * 7330), "2x": ((16 * 7330, 22 * 7330), 24 * 7330)}


@pytest.mark.parametrize("path", COCO_CONFIGS, ids=os.path.basename)
def test_coco_configs_use_the_authors_solver_and_test_settings(path):
    """The paper's FPN baseline and every Decoupled R-CNN COCO config: lr 0.02 at 16 images,
    warm-up 500 iterations from 0.001, 12 (24) epochs, test score threshold 0.001; the
    authors' regression-loss divisor."""
    cfg = _load(path)
    steps, max_iter = SCHEDULES["2x" if path.endswith("_2x.yaml") else "1x"]
    solver = cfg.SOLVER
    assert (solver.IMS_PER_BATCH, solver.BASE_LR, solver.STEPS, solver.MAX_ITER) == (
        16,
        0.02,
        steps,
        max_iter,
    )
    assert (solver.WARMUP_ITERS, solver.WARMUP_FACTOR, solver.WARMUP_METHOD) == (
        500,
        0.001,
        "linear",
    )
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.001
    assert (cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE) == (0.5, 100)
    # The authors' COCO code: stage weight x L1 sum / (1024 x images), no further lambda (their
    # lambda 0.5 of Eq. 8 is the 1024, their lambda 1 would be 512), one regressor or three.
    d = cfg.MODEL.DECOUPLED
    assert (d.REG_LOSS_NORMALIZER, d.REG_LOSS_NORMALIZER_PER_IMAGE) == ("fixed", 1024)
    assert d.REG_LOSS_LAMBDA == 1.0


def test_config_files_cover_the_paper_tables():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {
        f"drcnn_table3_nms_reg_{t}.yaml" for t in ("070", "075", "080", "085", "090", "095")
    } <= names
    assert {f"drcnn_table4_stages_{k}.yaml" for k in (1, 2, 3, 4)} <= names
