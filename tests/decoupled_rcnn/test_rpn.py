"""DecoupledRPN: two NMS thresholds on one set of candidates; plain RPN at inference."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_proposal_generator
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from decoupled_rcnn import add_decoupled_rcnn_config, split_decoupled_proposals

IMAGE_SIZE = (256, 256)
INPUT_SHAPE = {"p2": ShapeSpec(channels=4, stride=4), "p3": ShapeSpec(channels=4, stride=8)}

# A is the best box. B overlaps A at IoU 0.80: NMS at 0.7 removes it, NMS at 0.85 keeps it.
# D overlaps A at IoU 0.95: removed by both. C is far from all of them.
A, B, C, D = [0, 0, 100, 100], [0, 0, 100, 80], [150, 150, 200, 200], [0, 0, 100, 95]
LOGITS = {"A": 4.0, "D": 3.0, "B": 2.0, "C": 1.0}


def _rpn(name="DecoupledRPN", post_nms_topk=10):
    cfg = get_cfg()
    add_decoupled_rcnn_config(cfg)
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = name
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64]]
    cfg.MODEL.RPN.NMS_THRESH = 0.7
    cfg.MODEL.DECOUPLED.NMS_THRESH_REG = 0.85
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = post_nms_topk
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = post_nms_topk
    torch.manual_seed(0)
    return build_proposal_generator(cfg, INPUT_SHAPE)


def _hand_built_proposals(rpn):
    """Runs predict_proposals on one level whose anchors are the boxes, with zero deltas."""
    names = list(LOGITS)
    boxes = torch.tensor([{"A": A, "B": B, "C": C, "D": D}[n] for n in names], dtype=torch.float)
    logits = torch.tensor([[LOGITS[n] for n in names]])
    proposals = rpn.predict_proposals(
        [Boxes(boxes)], [logits], [torch.zeros(1, 4, 4)], [IMAGE_SIZE]
    )
    return proposals, {tuple(map(float, b)): n for n, b in zip(names, boxes.tolist())}


def _names(instances, name_of):
    return [name_of[tuple(b)] for b in instances.proposal_boxes.tensor.tolist()]


def test_two_nms_thresholds_on_the_same_candidates():
    rpn = _rpn().train()
    (packed,), name_of = _hand_built_proposals(rpn)
    (cls_set,), (reg_set,) = split_decoupled_proposals([packed])
    assert _names(cls_set, name_of) == ["A", "C"]
    assert _names(reg_set, name_of) == ["A", "B", "C"]
    assert (
        set(cls_set.get_fields())
        == set(reg_set.get_fields())
        == {
            "proposal_boxes",
            "objectness_logits",
        }
    )


def test_each_set_is_capped_at_post_nms_topk():
    rpn = _rpn(post_nms_topk=2).train()
    (packed,), name_of = _hand_built_proposals(rpn)
    (cls_set,), (reg_set,) = split_decoupled_proposals([packed])
    assert _names(cls_set, name_of) == ["A", "C"]
    assert _names(reg_set, name_of) == ["A", "B"]


def test_inference_returns_only_the_classification_set():
    rpn = _rpn().eval()
    (proposals,), name_of = _hand_built_proposals(rpn)
    assert _names(proposals, name_of) == ["A", "C"]
    assert not proposals.has("for_regression")


def test_one_head_pass_and_unchanged_losses():
    images = ImageList(torch.zeros(2, 3, *IMAGE_SIZE), [IMAGE_SIZE, (200, 240)])
    torch.manual_seed(1)
    features = {"p2": torch.randn(2, 4, 64, 64), "p3": torch.randn(2, 4, 32, 32)}
    gt = Instances(IMAGE_SIZE, gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 90.0, 120.0]])))
    decoupled, plain = _rpn().train(), _rpn("RPN").train()
    calls = []
    decoupled.rpn_head.register_forward_hook(lambda *args: calls.append(1))

    with EventStorage():
        torch.manual_seed(2)
        proposals, losses = decoupled(images, features, [gt, gt])
        torch.manual_seed(2)
        plain_proposals, plain_losses = plain(images, features, [gt, gt])

    assert len(calls) == 1
    assert losses.keys() == plain_losses.keys()
    assert all(torch.equal(losses[k], plain_losses[k]) for k in losses)
    cls_sets, _ = split_decoupled_proposals(proposals)
    for ours, reference in zip(cls_sets, plain_proposals):
        assert torch.equal(ours.proposal_boxes.tensor, reference.proposal_boxes.tensor)


def test_split_requires_decoupled_rpn_proposals():
    proposals = Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="MODEL.PROPOSAL_GENERATOR.NAME"):
        split_decoupled_proposals([proposals])
