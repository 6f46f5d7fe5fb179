"""MODEL.DECOUPLED: validation at build time and the project's config files."""

import glob
import os

import pytest

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_proposal_generator, build_roi_heads

from decoupled_rcnn import add_decoupled_rcnn_config, check_decoupled_rcnn_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = {"p2": ShapeSpec(channels=8, stride=4)}


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
    build_proposal_generator(_cfg(), SHAPE)
    build_roi_heads(_cfg(), SHAPE)


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"NMS_THRESH_REG": 0.0}, "NMS_THRESH_REG"),
        ({"NMS_THRESH_REG": 1.2}, "NMS_THRESH_REG"),
        ({"NMS_THRESH_REG": 0.6}, "MODEL.RPN.NMS_THRESH"),
        ({"NUM_REG_STAGES": 0}, "NUM_REG_STAGES"),
        ({"NUM_REG_STAGES": 2}, "REG_STAGE_BBOX_REG_WEIGHTS"),
        ({"REG_STAGE_LOSS_WEIGHTS": (1.0, 0.5)}, "REG_STAGE_LOSS_WEIGHTS"),
        ({"REG_STAGE_BBOX_REG_WEIGHTS": ((10.0, 10.0, 5.0),)}, "REG_STAGE_BBOX_REG_WEIGHTS"),
        ({"TEST_STAGE": 2}, "TEST_STAGE"),
        ({"REG_LOSS_LAMBDA": -0.5}, "REG_LOSS_LAMBDA"),
        ({"REG_LOSS_TYPE": "giou"}, "REG_LOSS_TYPE"),
        ({"REG_BATCH_SIZE_PER_IMAGE": 0}, "REG_BATCH_SIZE_PER_IMAGE"),
        ({"SHARE_FC": True, "REG_HEAD_NAME": "DoubleHeadConvHead"}, "REG_HEAD_NAME"),
    ],
)
def test_invalid_settings_fail_at_build_time_naming_the_key(settings, key):
    for build in (build_proposal_generator, build_roi_heads):
        with pytest.raises(ValueError, match=key):
            build(_cfg(**settings), SHAPE)


CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "drcnn*.yaml"), recursive=True))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_project_configs_load_and_validate(path):
    cfg = get_cfg()
    add_decoupled_rcnn_config(cfg)
    if "drcnn_dh" in path:
        pytest.importorskip("double_head").add_doublehead_config(cfg)
    cfg.merge_from_file(path)
    check_decoupled_rcnn_config(cfg)
    assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "DecoupledRPN"
    assert cfg.MODEL.ROI_HEADS.NAME == "DecoupledROIHeads"


def test_config_files_cover_the_paper_tables():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {
        f"drcnn_table3_nms_reg_{t}.yaml" for t in ("070", "075", "080", "085", "090", "095")
    } <= names
    assert {f"drcnn_table4_stages_{k}.yaml" for k in (1, 2, 3, 4)} <= names
