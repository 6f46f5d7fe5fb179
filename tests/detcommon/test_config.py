"""Config validation: a bad value of every project key, and the bad combinations, fail before
training with an error that names the key and what it allows."""

import functools
import os

import pytest
from detectron2.modeling import build_backbone, build_proposal_generator, build_roi_heads

from detcommon.config import validate_config
from tests.conftest import project_cfg

DH = "configs/shapes/dh_ext.yaml"
DRCNN = "configs/shapes/drcnn_cascade.yaml"
HEADS = "['DoubleHeadConvHead', 'FastRCNNConvFCHead'"  # start of the registry's list
D, C, S = "MODEL.DOUBLE_HEAD.", "MODEL.DOUBLE_HEAD.CONV_HEAD.", "MODEL.DECOUPLED."

# (base config, [(key, value as on the command line)], key the error must name, allowed values it must show)
CASES = [
    (
        DH,
        [("DATASETS.REGISTER_COCO", "[['only_a_name']]")],
        "DATASETS.REGISTER_COCO[0]",
        "[NAME, JSON_FILE, IMAGE_DIR]",
    ),
    (
        DH,
        [("DATASETS.SHAPES_ROOT", repr(os.path.abspath(__file__)))],
        "DATASETS.SHAPES_ROOT",
        "a directory path",
    ),
    (DH, [("DATALOADER.SKIP_BAD_IMAGES", "'yes'")], "DATALOADER.SKIP_BAD_IMAGES", "<class 'bool'>"),
    (DH, [(D + "CLS_HEAD_NAME", "'NoSuchHead'")], D + "CLS_HEAD_NAME", HEADS),
    (DH, [(D + "REG_HEAD_NAME", "'NoSuchHead'")], D + "REG_HEAD_NAME", HEADS),
    (DH, [(D + "CONV_ROI_SCALE", "0.0")], D + "CONV_ROI_SCALE", "> 0"),
    (DH, [(D + "LOSS_WEIGHT_FC", "-1.0")], D + "LOSS_WEIGHT_FC", ">= 0"),
    (DH, [(D + "LOSS_WEIGHT_CONV", "-2.5")], D + "LOSS_WEIGHT_CONV", ">= 0"),
    (DH, [(D + "LAMBDA_FC", "1.5")], D + "LAMBDA_FC", "[0, 1]"),
    (DH, [(D + "LAMBDA_CONV", "-0.2")], D + "LAMBDA_CONV", "[0, 1]"),
    (DH, [(D + "TEST_MODE", "'best'")], D + "TEST_MODE", "['conv', 'double', 'fc', 'fused']"),
    (DH, [(D + "FUSION", "'median'")], D + "FUSION", "['average', 'complementary', 'max']"),
    (
        DH,
        [(D + "EVAL_MODES", "['fused', 'nope']")],
        D + "EVAL_MODES",
        "['conv', 'double', 'fc', 'fused']",
    ),
    (DH, [(D + "FAST_PATH", "'yes'")], D + "FAST_PATH", "<class 'bool'>"),
    (DH, [(D + "FUSED_PREFILTER_THRESH", "1.5")], D + "FUSED_PREFILTER_THRESH", "[0, 1]"),
    # Fusion needs a trained conv classifier: lambda_conv = 1 leaves it untrained.
    (
        DH,
        [(D + "LAMBDA_CONV", "1.0")],
        D + "TEST_MODE",
        "Choose a mode among those the loss trains",
    ),
    (DH, [(D + "TEST_MODE", "'fc'"), (D + "LAMBDA_FC", "1.0")], D + "TEST_MODE", "never trained"),
    (DH, [(C + "CONV_DIM", "0")], C + "CONV_DIM", "integer >= 1"),
    (DH, [(C + "BOTTLENECK_DIM", "-64")], C + "BOTTLENECK_DIM", "integer >= 1"),
    (DH, [(C + "NUM_BOTTLENECKS", "-1")], C + "NUM_BOTTLENECKS", "integer >= 0"),
    (DH, [(C + "NUM_NONLOCAL", "3")], C + "NUM_NONLOCAL", f"[0, {C}NUM_BOTTLENECKS=2]"),
    (DH, [(C + "NONLOCAL_DIM", "102")], C + "NONLOCAL_DIM", f"multiple of {C}NONLOCAL_GROUPS"),
    (DH, [(C + "NONLOCAL_GROUPS", "0")], C + "NONLOCAL_GROUPS", "integer >= 1"),
    (DH, [(C + "NORM", "'XN'")], C + "NORM", "'BN', 'SyncBN', 'FrozenBN', 'GN'"),
    (
        DH,
        [(C + "NORM", "'GN'"), (C + "BOTTLENECK_DIM", "48")],
        C + "BOTTLENECK_DIM",
        "multiple of 32",
    ),
    (DRCNN, [(S + "NMS_THRESH_REG", "1.5")], S + "NMS_THRESH_REG", "(0, 1]"),
    # NMS_reg below NMS_cls.
    (
        DRCNN,
        [(S + "NMS_THRESH_REG", "0.6")],
        S + "NMS_THRESH_REG",
        "must not be below MODEL.RPN.NMS_THRESH (0.7)",
    ),
    (DRCNN, [(S + "REG_BATCH_SIZE_PER_IMAGE", "0")], S + "REG_BATCH_SIZE_PER_IMAGE", ">= 1"),
    (DRCNN, [(S + "SHARE_FC", "1")], S + "SHARE_FC", "<class 'bool'>"),
    (
        DRCNN,
        [(S + "SHARE_FC", "True"), (S + "REG_HEAD_NAME", "'DoubleHeadConvHead'")],
        S + "REG_HEAD_NAME",
        "must equal MODEL.ROI_BOX_HEAD.NAME",
    ),
    (DRCNN, [(S + "REG_HEAD_NAME", "'NoSuchHead'")], S + "REG_HEAD_NAME", HEADS),
    # A cascade with zero stages.
    (DRCNN, [(S + "NUM_REG_STAGES", "0")], S + "NUM_REG_STAGES", ">= 1"),
    (
        DRCNN,
        [(S + "REG_STAGE_BBOX_REG_WEIGHTS", "((10.0, 10.0, 5.0, 5.0),)")],
        S + "REG_STAGE_BBOX_REG_WEIGHTS",
        "NUM_REG_STAGES is 3",
    ),
    (
        DRCNN,
        [
            (
                S + "REG_STAGE_BBOX_REG_WEIGHTS",
                "((10., 10., 5., 5.), (20., 20., 10., 10.), (30., 30., 15., -15.))",
            )
        ],
        S + "REG_STAGE_BBOX_REG_WEIGHTS[2]",
        "4 positive numbers",
    ),
    (
        DRCNN,
        [(S + "REG_STAGE_LOSS_WEIGHTS", "(1.0, 0.5)")],
        S + "REG_STAGE_LOSS_WEIGHTS",
        "NUM_REG_STAGES is 3",
    ),
    (
        DRCNN,
        [(S + "REG_STAGE_LOSS_WEIGHTS", "(1.0, 0.5, -0.25)")],
        S + "REG_STAGE_LOSS_WEIGHTS[2]",
        ">= 0",
    ),
    (DRCNN, [(S + "REG_LOSS_LAMBDA", "-0.5")], S + "REG_LOSS_LAMBDA", ">= 0"),
    (DRCNN, [(S + "REG_LOSS_TYPE", "'giou'")], S + "REG_LOSS_TYPE", "'l1' or 'smooth_l1'"),
    (DRCNN, [(S + "REG_LOSS_NORMALIZER", "'mean'")], S + "REG_LOSS_NORMALIZER", "num_samples"),
    (
        DH,
        [(D + "CONV_ROI_POOLING", "'clipped'")],
        D + "CONV_ROI_POOLING",
        "['enlarged_clipped', 'original_level']",
    ),
    (DH, [(C + "NONLOCAL_INIT", "'zero'")], C + "NONLOCAL_INIT", "['zero_conv', 'zero_norm']"),
    (
        DRCNN,
        [(S + "REG_LOSS_NORMALIZER", "'batch_size'")],
        S + "REG_LOSS_NORMALIZER",
        "REG_LOSS_NORMALIZER 'fixed' and REG_LOSS_NORMALIZER_PER_IMAGE",
    ),
    (
        DRCNN,
        [(S + "REG_LOSS_NORMALIZER_PER_IMAGE", "0")],
        S + "REG_LOSS_NORMALIZER_PER_IMAGE",
        "> 0",
    ),
    (DRCNN, [(S + "REG_PROPOSAL_APPEND_GT", "1")], S + "REG_PROPOSAL_APPEND_GT", "<class 'bool'>"),
    (DRCNN, [(S + "REG_ROI_SCALE", "0.0")], S + "REG_ROI_SCALE", "> 0"),
    (
        DRCNN,
        [(S + "TEST_CLASS_BOXES", "'all'")],
        S + "TEST_CLASS_BOXES",
        "('auto', 'per_class', 'argmax')",
    ),
    (DRCNN, [(S + "TEST_CLASS_BOXES", "'per_class'")], S + "TEST_CLASS_BOXES", "TEST_STAGE 1"),
    (DRCNN, [(S + "FAST_PATH", "'yes'")], S + "FAST_PATH", "<class 'bool'>"),
    (DRCNN, [(S + "SMOOTH_L1_BETA", "-1.0")], S + "SMOOTH_L1_BETA", ">= 0"),
    (DRCNN, [(S + "TEST_STAGE", "4")], S + "TEST_STAGE", "[0, NUM_REG_STAGES=3]"),
    (
        DRCNN,
        [("MODEL.PROPOSAL_GENERATOR.NAME", "'RPN'")],
        "MODEL.PROPOSAL_GENERATOR.NAME",
        "'DecoupledRPN'",
    ),
    (
        DH,
        [("TEST.BEST_CHECKPOINT_MODE", "'highest'")],
        "TEST.BEST_CHECKPOINT_MODE",
        "'max' or 'min'",
    ),
    (
        DH,
        [("TEST.BEST_CHECKPOINT_METRIC", "'AP75'")],
        "TEST.BEST_CHECKPOINT_METRIC",
        "TASK/COLUMN (e.g. 'bbox/AP75')",
    ),
    # A best checkpoint without periodic evaluation, or without a dataset to evaluate.
    (
        DH,
        [("TEST.BEST_CHECKPOINT_METRIC", "'bbox/AP75'"), ("TEST.EVAL_PERIOD", "0")],
        "TEST.BEST_CHECKPOINT_METRIC",
        "set TEST.EVAL_PERIOD > 0 (got 0)",
    ),
    (
        DH,
        [("TEST.BEST_CHECKPOINT_METRIC", "'bbox/AP75'"), ("DATASETS.TEST", "()")],
        "TEST.BEST_CHECKPOINT_METRIC",
        "set DATASETS.TEST",
    ),
]


@functools.lru_cache()
def _feature_shapes(config_file):
    return build_backbone(project_cfg(config_file)).output_shape()


def _leaf_keys(node, prefix):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


@pytest.mark.parametrize(
    "config_file, settings, key, allowed", CASES, ids=[" ".join(k for k, _ in c[1]) for c in CASES]
)
def test_bad_value_fails_naming_the_key_and_allowed_values(config_file, settings, key, allowed):
    cfg = project_cfg(config_file)
    with pytest.raises(ValueError) as error:
        cfg.merge_from_list([x for kv in settings for x in kv])  # yacs refuses wrong types here
        validate_config(cfg)  # train_net.py's setup()
        shapes = _feature_shapes(config_file)  # build time: the packages' own checks
        build_proposal_generator(cfg, shapes)
        build_roi_heads(cfg, shapes)
    assert key in str(error.value) and allowed in str(error.value), str(error.value)


def test_cases_cover_every_project_key():
    cfg = project_cfg(DH)
    project_keys = {"DATASETS.REGISTER_COCO", "DATASETS.SHAPES_ROOT", "DATALOADER.SKIP_BAD_IMAGES"}
    project_keys |= {"TEST.BEST_CHECKPOINT_METRIC", "TEST.BEST_CHECKPOINT_MODE"}
    project_keys |= set(_leaf_keys(cfg.MODEL.DOUBLE_HEAD, D)) | set(
        _leaf_keys(cfg.MODEL.DECOUPLED, S)
    )
    assert project_keys - {k for case in CASES for k, _ in case[1]} == set()


@pytest.mark.parametrize(
    "config_file", [DH, DRCNN, "configs/drcnn_dh_R50_FPN_1x.yaml", "configs/dh_R50_FPN_1x.yaml"]
)
def test_project_configs_pass(config_file):
    validate_config(project_cfg(config_file))
