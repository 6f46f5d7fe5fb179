"""Double-Head inference fast paths: only the mode's branches, the conv branch on the proposals
the fc scores let through, and the same detections as the full path."""

import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from double_head import DoubleHeadConvHead
from tests.conftest import tiny_double_head_cfg

torch.set_num_threads(1)


def _cfg(*opts):
    """configs/shapes/dh_ext.yaml narrowed to a model that trains in seconds on 128 px images."""
    return tiny_double_head_cfg(opts=[
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.DOUBLE_HEAD.CONV_HEAD.BOTTLENECK_DIM", 16,
        "MODEL.RPN.POST_NMS_TOPK_TEST", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
        "INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 160,
        "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 160, *opts,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    """A Double-Head-Ext trained for 40 iterations on 4 shapes images, and 4 test images."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    dicts = DatasetCatalog.get("shapes_val")
    train_mapper = DatasetMapper(cfg, is_train=True)
    batches = [[train_mapper(d) for d in dicts[i : i + 2]] for i in (0, 2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    with EventStorage():
        for step in range(40):
            losses = model(batches[step % 2])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    test_mapper = DatasetMapper(cfg, is_train=False)
    return model.eval(), [test_mapper(d) for d in dicts[2:6]]


def _run(model, inputs, **settings):
    """
    Detections of `model` on `inputs` with the RoI heads' attributes set to `settings`, and the
    number of RoIs each branch's box head saw.
    """
    heads = model.roi_heads
    saved = {k: getattr(heads, k) for k in settings}
    rois = {branch: 0 for branch in heads.box_heads}
    hooks = [
        head.register_forward_hook(
            lambda m, args, out, b=branch: rois.update({b: rois[b] + len(args[0])})
        )
        for branch, head in heads.box_heads.items()
    ]
    try:
        for k, v in settings.items():
            setattr(heads, k, v)
        with torch.no_grad():
            outputs = model(inputs)
    finally:
        for k, v in saved.items():
            setattr(heads, k, v)
        for hook in hooks:
            hook.remove()
    return [o["instances"] for o in outputs], rois


def _all_branches(model, inputs, mode):
    """Detections of `mode` by the multi-mode evaluation, which runs both branches on everything."""
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        results = model.roi_heads.predict_modes(features, proposals, [mode])[mode]
    return [r["instances"] for r in model._postprocess(results, inputs, images.image_sizes)]


def _assert_same_detections(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.equal(a.scores, b.scores)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=1e-6, atol=1e-6)


def test_double_fast_path_gives_the_full_path_detections(trained):
    model, inputs = trained
    fast, fast_rois = _run(model, inputs, test_mode="double", fast_path=True)
    full, full_rois = _run(model, inputs, test_mode="double", fast_path=False)
    num_proposals = full_rois["fc"]
    assert fast_rois["fc"] == num_proposals == full_rois["conv"]
    # the fc scores straddle SCORE_THRESH_TEST: the conv branch sees some proposals, not all
    # (how many depends on the tiny model's training numerics: 236 of 400 on one machine)
    assert 0 < fast_rois["conv"] < num_proposals, (fast_rois, num_proposals)
    assert sum(len(d) for d in fast) >= len(inputs)
    _assert_same_detections(fast, full)
    _assert_same_detections(fast, _all_branches(model, inputs, "double"))


def test_double_fast_path_with_the_earlier_conv_pooling(trained):
    """CONV_ROI_POOLING "enlarged_clipped" (no pooler of its own): the fast path still exact."""
    model, inputs = trained
    earlier = {"conv_box_pooler": None, "conv_roi_pooling": "enlarged_clipped"}
    fast, fast_rois = _run(model, inputs, test_mode="double", fast_path=True, **earlier)
    full, full_rois = _run(model, inputs, test_mode="double", fast_path=False, **earlier)
    assert 0 < fast_rois["conv"] < full_rois["conv"]
    assert sum(len(d) for d in fast) >= len(inputs)
    _assert_same_detections(fast, full)
    # the setting took effect: another pooling of the conv branch, other boxes than the default's
    default, _ = _run(model, inputs, test_mode="double", fast_path=False)
    assert any(
        len(a) != len(b) or not torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor)
        for a, b in zip(full, default)
    )


def test_fast_path_without_any_proposal_left(trained):
    model, inputs = trained
    predictor = model.roi_heads.box_predictors["conv"]  # its threshold is the one applied
    thresh, predictor.test_score_thresh = predictor.test_score_thresh, 1.0  # none reaches it
    try:
        detections, rois = _run(model, inputs, test_mode="double", fast_path=True)
    finally:
        predictor.test_score_thresh = thresh
    assert rois["conv"] == 0  # the conv-head did not run at all
    assert all(len(d) == 0 for d in detections)


@pytest.mark.parametrize("mode, unused", [("fc", "conv"), ("conv", "fc")])
def test_single_branch_modes_run_one_branch(trained, mode, unused):
    model, inputs = trained
    detections, rois = _run(model, inputs, test_mode=mode)
    assert rois[unused] == 0 and rois[mode] > 0
    _assert_same_detections(detections, _all_branches(model, inputs, mode))


def test_fused_prefilter(trained):
    model, inputs = trained
    off, off_rois = _run(model, inputs, test_mode="fused", fused_prefilter_thresh=0.0)
    assert off_rois["conv"] == off_rois["fc"]
    _assert_same_detections(off, _all_branches(model, inputs, "fused"))
    on, on_rois = _run(model, inputs, test_mode="fused", fused_prefilter_thresh=0.05)
    assert 0 < on_rois["conv"] < off_rois["conv"]
    assert sum(len(d) for d in on) > 0


def test_config_keys():
    heads = build_model(_cfg()).roi_heads
    assert heads.fast_path is True and heads.fused_prefilter_thresh == 0.0
    heads = build_model(
        _cfg("MODEL.DOUBLE_HEAD.FAST_PATH", False, "MODEL.DOUBLE_HEAD.FUSED_PREFILTER_THRESH", 0.3)
    ).roi_heads
    assert heads.fast_path is False and heads.fused_prefilter_thresh == 0.3
    with pytest.raises(ValueError, match="FUSED_PREFILTER_THRESH must be in \\[0, 1\\], got 1.5"):
        build_model(_cfg("MODEL.DOUBLE_HEAD.FUSED_PREFILTER_THRESH", 1.5))


def test_conv_head_on_zero_rois():
    head = DoubleHeadConvHead(
        ShapeSpec(channels=8, height=7, width=7), conv_dim=16, bottleneck_dim=4,
        num_bottlenecks=2, num_nonlocal=2, nonlocal_dim=8, nonlocal_groups=4,
    ).eval()  # fmt: skip
    assert head(torch.zeros(0, 8, 7, 7)).shape == (0, 16)
