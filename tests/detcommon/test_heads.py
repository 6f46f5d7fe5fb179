"""detcommon.heads: every RoI-heads class answers the analysis tools through one protocol
(named_box_heads, predict_per_head, disable_fast_paths); Detectron2's StandardROIHeads is covered
by the shared functions, and anything else is refused with a message saying what is needed."""

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from detcommon.heads import (
    count_head_rois,
    disable_fast_paths,
    named_box_heads,
    predict_per_head,
    select_class_boxes,
)
from tests.conftest import tiny_double_head_cfg


def _model(config, opts=()):
    cfg = tiny_double_head_cfg(config, ["MODEL.WEIGHTS", "", *opts])
    return build_model(cfg).eval()


def test_fast_paths_are_turned_off_per_project():
    dh = _model("configs/shapes/dh_ext.yaml", ["MODEL.DOUBLE_HEAD.FUSED_PREFILTER_THRESH", 0.05])
    assert dh.roi_heads.fast_path and dh.roi_heads.fused_prefilter_thresh == 0.05
    disable_fast_paths(dh.roi_heads)
    assert not dh.roi_heads.fast_path and dh.roi_heads.fused_prefilter_thresh == 0.0
    drcnn = _model("configs/shapes/drcnn_cascade.yaml")
    assert drcnn.roi_heads.fast_path
    disable_fast_paths(drcnn.roi_heads)
    assert not drcnn.roi_heads.fast_path
    baseline = _model("configs/shapes/faster_rcnn.yaml")
    assert disable_fast_paths(baseline.roi_heads) is baseline.roi_heads  # nothing to turn off


def test_head_names_of_every_kind_of_roi_heads():
    assert list(named_box_heads(_model("configs/shapes/faster_rcnn.yaml").roi_heads)) == ["fc"]
    assert list(named_box_heads(_model("configs/shapes/dh_ext.yaml").roi_heads)) == ["fc", "conv"]
    cascade = _model("configs/shapes/drcnn_cascade.yaml").roi_heads
    assert list(named_box_heads(cascade)) == [
        "classifier",
        *(f"regressor_stage{k + 1}" for k in range(len(cascade.reg_heads))),
    ]
    # A StandardROIHeads whose box head is Double-Head's conv-head: named by its analysis_name.
    conv = _model(
        "configs/shapes/faster_rcnn.yaml", ["MODEL.ROI_BOX_HEAD.NAME", "DoubleHeadConvHead"]
    )
    assert list(named_box_heads(conv.roi_heads)) == ["conv"]


def test_predict_per_head_of_the_baseline_selects_the_asked_class():
    from detectron2.structures import Boxes, Instances

    model = _model("configs/shapes/faster_rcnn.yaml")
    heads = model.roi_heads
    features = [torch.rand(1, 32, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    boxes = torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 8.0, 50.0, 40.0]])
    classes = torch.tensor([0, 3])
    with torch.no_grad():
        (out,) = predict_per_head(
            heads, features, [Instances((64, 64), proposal_boxes=Boxes(boxes))], classes
        ).values()
        pooled = heads.box_pooler(features, [Boxes(boxes)])
        scores, deltas = heads.box_predictor(heads.box_head(pooled))
    probs = scores.softmax(-1)
    assert torch.allclose(out.scores, probs[[0, 1], [0, 3]])
    expected = heads.box_predictor.box2box_transform.apply_deltas(deltas, boxes)
    assert torch.allclose(out.boxes, select_class_boxes(expected, classes))


def _rois_per_head(model, num_boxes):
    """{head: RoIs it ran on} in one inference of `model`'s RoI heads on `num_boxes` boxes."""
    from detectron2.structures import Boxes, Instances

    features = {
        f: torch.rand(1, 32, 64 // s, 64 // s)
        for f, s in zip(("p2", "p3", "p4", "p5"), (4, 8, 16, 32))
    }
    boxes = (
        torch.tensor([[2.0, 2.0, 20.0, 24.0]]).repeat(num_boxes, 1)
        + torch.arange(num_boxes)[:, None]
    )
    proposals = [Instances((64, 64), proposal_boxes=Boxes(boxes))]
    with torch.no_grad(), count_head_rois(model.roi_heads) as counts:
        model.roi_heads(None, features, proposals)
        model.roi_heads(None, features, proposals)  # counts add up over calls
    model.roi_heads(None, features, proposals)  # not counted: the hooks are gone
    return counts


def test_head_roi_counts_show_what_a_fast_path_leaves_each_head():
    assert _rois_per_head(_model("configs/shapes/faster_rcnn.yaml"), 7) == {"fc": 14}
    dh = _model("configs/shapes/dh.yaml", ["MODEL.DOUBLE_HEAD.TEST_MODE", "double"])
    cls_score = dh.roi_heads.box_predictors["fc"].cls_score
    nn.init.zeros_(cls_score.weight)
    with torch.no_grad():  # every proposal background for the fc-head: below the 0.05 threshold
        cls_score.bias.copy_(torch.tensor([-10.0] * (len(cls_score.bias) - 1) + [10.0]))
    assert _rois_per_head(dh, 7) == {"fc": 14, "conv": 0}
    dh.roi_heads.disable_fast_paths()
    assert _rois_per_head(dh, 7) == {"fc": 14, "conv": 14}
    cascade = _model("configs/shapes/drcnn_cascade.yaml", ["MODEL.DECOUPLED.FAST_PATH", False])
    counts = _rois_per_head(cascade, 5)
    assert counts["classifier"] == 10 and len(counts) == 1 + len(cascade.roi_heads.reg_heads)
    assert all(counts[f"regressor_stage{k + 1}"] == 10 for k in range(len(counts) - 1))


def test_unknown_roi_heads_are_refused_naming_the_protocol():
    with pytest.raises(
        ValueError,
        match="do not know RoI heads Linear: .* named_box_heads\\(\\) and predict_per_head",
    ):
        named_box_heads(nn.Linear(2, 2))


def test_select_class_boxes():
    x = torch.arange(2 * 12, dtype=torch.float32).view(2, 12)  # K = 3 classes
    assert select_class_boxes(x, torch.tensor([2, 0])).tolist() == [
        x[0, 8:12].tolist(),
        x[1, 0:4].tolist(),
    ]
    agnostic = torch.rand(2, 4)
    assert select_class_boxes(agnostic, torch.tensor([1, 2])) is agnostic
