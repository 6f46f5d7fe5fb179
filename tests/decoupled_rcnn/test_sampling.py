"""Positive-only regression sampling."""

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

from decoupled_rcnn import sample_regression_proposals

IMAGE_SIZE = (100, 100)
MATCHER = Matcher([0.5], [0, 1], allow_low_quality_matches=False)


def _image(proposals, gt_boxes, gt_classes):
    p = Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.tensor(proposals).reshape(-1, 4)))
    t = Instances(IMAGE_SIZE, gt_boxes=Boxes(torch.tensor(gt_boxes).reshape(-1, 4)))
    t.gt_classes = torch.tensor(gt_classes, dtype=torch.int64)
    return p, t


def test_only_positives_at_most_the_cap():
    gt = [[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]]
    positives = [[10.0 + d, 10.0, 50.0 + d, 50.0] for d in range(6)]  # IoU >= 0.74 with gt 0
    # IoU 0.49 with gt 0 (just below the threshold), far from both, and ignored-free background.
    negatives = [[10.0, 10.0, 50.0, 29.6], [0.0, 60.0, 20.0, 99.0], [55.0, 0.0, 99.0, 40.0]]
    proposals, targets = _image(positives + negatives, gt, [3, 1])
    with EventStorage():
        (everything,) = sample_regression_proposals([proposals], [targets], MATCHER, 100)
        (capped,) = sample_regression_proposals([proposals], [targets], MATCHER, 4)
    assert len(everything) == 6 and len(capped) == 4
    for sampled in (everything, capped):
        iou = pairwise_iou(sampled.proposal_boxes, sampled.gt_boxes).diagonal()
        assert (iou >= 0.5).all()
        assert (sampled.gt_classes == 3).all()


def test_image_without_ground_truth_gives_an_empty_sample():
    proposals, targets = _image([[0.0, 0.0, 10.0, 10.0]], [], [])
    with EventStorage():
        (sampled,) = sample_regression_proposals([proposals], [targets], MATCHER, 8)
    assert len(sampled) == 0
    assert sampled.gt_boxes.tensor.shape == (0, 4) and sampled.gt_classes.shape == (0,)
