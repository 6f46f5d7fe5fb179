"""
Positive-only RoI sampling of Decoupled R-CNN's regression branch.

Shape shorthand:

    Ri: number of proposals of image i
    Mi: number of positives kept in image i, at most ``batch_size_per_image``
"""

from typing import List

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import Instances, pairwise_iou
from detectron2.utils.events import get_event_storage

__all__ = ["sample_regression_proposals"]


@torch.no_grad()
def sample_regression_proposals(
    proposals: List[Instances],
    targets: List[Instances],
    proposal_matcher: Matcher,
    batch_size_per_image: int,
    stage: int = 1,
) -> List[Instances]:
    """
    Labels proposals against the ground truth and keeps a random subset of at most
    ``batch_size_per_image`` positives per image; negatives and ignored proposals are dropped.
    Classification sampling (positives and negatives) is the usual
    :meth:`ROIHeads.label_and_sample_proposals`; this is the regression side of the decoupled
    sampling strategy, used by every regression stage.

    Args:
        proposals (list[Instances]): per image, with field "proposal_boxes" (Ri boxes).
        targets (list[Instances]): per image, with fields "gt_boxes" and "gt_classes".
        proposal_matcher (Matcher): its label 1 marks a positive (IoU >= 0.5 in the paper).
        batch_size_per_image (int): most positives kept per image.
        stage (int): regression stage, 1-based, for the logged sample count.

    Returns:
        list[Instances]: per image, Mi <= batch_size_per_image positives with fields
        "proposal_boxes", "gt_boxes" (Mi, 4) and "gt_classes" (Mi,).
    """
    sampled = []
    for proposals_i, targets_i in zip(proposals, targets):
        match_quality_matrix = pairwise_iou(targets_i.gt_boxes, proposals_i.proposal_boxes)
        matched_idxs, matched_labels = proposal_matcher(match_quality_matrix)
        # subsample_labels draws positives among labels outside {-1, bg_label}: keep label 1 only.
        labels = torch.where(matched_labels == 1, 1, -1)
        pos_idx, _ = subsample_labels(labels, batch_size_per_image, 1.0, bg_label=0)
        sampled_i = proposals_i[pos_idx]
        sampled_i.gt_boxes = targets_i.gt_boxes[matched_idxs[pos_idx]]
        sampled_i.gt_classes = targets_i.gt_classes[matched_idxs[pos_idx]]
        sampled.append(sampled_i)
    num_samples = sum(len(x) for x in sampled) / max(len(sampled), 1)
    get_event_storage().put_scalar(f"decoupled/num_reg_samples_s{stage}", num_samples)
    return sampled
