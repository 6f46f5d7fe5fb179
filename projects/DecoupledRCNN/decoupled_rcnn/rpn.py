"""
RPN of Decoupled R-CNN: one RPN pass, two NMS thresholds (decoupled sampling strategy).

Shape shorthand:

    N: number of images in the batch
    Hi x Wi: height and width of feature level i
    A: number of anchors at each location of a feature level
    ki: number of candidates kept at level i, min(k, Hi*Wi*A)
"""

from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator import RPN
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.structures import Instances

from .config import check_decoupled_rpn_config

__all__ = ["DecoupledRPN", "split_decoupled_proposals"]

# Boolean field that marks, in training, the proposals of the regression set.
REG_SET_FIELD = "for_regression"


@PROPOSAL_GENERATOR_REGISTRY.register()
class DecoupledRPN(RPN):
    """
    RPN whose training proposals are two sets drawn from the same pre-NMS candidates:
    ``Proposals_cls`` after NMS at ``nms_thresh`` and ``Proposals_reg`` after NMS at the looser
    ``nms_thresh_reg``, each capped at the post-NMS top-k. Both sets come back concatenated per
    image, the regression set marked by the bool field ``for_regression``; unpack them with
    :func:`split_decoupled_proposals`. At inference only ``Proposals_cls`` is returned, exactly as
    :class:`RPN` does. Losses are those of :class:`RPN`.
    """

    @configurable
    def __init__(self, *, nms_thresh_reg: float, **kwargs):
        """
        Args:
            nms_thresh_reg (float): NMS threshold of the regression proposal set.
            kwargs: arguments of :class:`RPN`; its ``nms_thresh`` is the classification set's.
        """
        super().__init__(**kwargs)
        self.nms_thresh_reg = nms_thresh_reg

    @classmethod
    def from_config(cls, cfg, input_shape):
        check_decoupled_rpn_config(cfg)
        ret = super().from_config(cfg, input_shape)
        ret["nms_thresh_reg"] = cfg.MODEL.DECOUPLED.NMS_THRESH_REG
        return ret

    def predict_proposals(self, anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes):
        """
        See :meth:`RPN.predict_proposals`. In training, each returned Instances holds
        ``Proposals_cls`` followed by ``Proposals_reg``, with fields "proposal_boxes",
        "objectness_logits" and "for_regression".
        """
        if not self.training:
            return super().predict_proposals(
                anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes
            )
        pre_nms_topk, post_nms_topk = self.pre_nms_topk[True], self.post_nms_topk[True]
        with torch.no_grad():
            boxes = self._decode_proposals(anchors, pred_anchor_deltas)
            boxes, logits = _top_candidates_per_level(boxes, pred_objectness_logits, pre_nms_topk)
            # Head, decoding and per-level top-k run once for both sets; on these candidates
            # find_top_rpn_proposals only re-sorts, clips and filters before its NMS.
            cls_set, reg_set = (
                find_top_rpn_proposals(
                    boxes,
                    logits,
                    image_sizes,
                    nms_thresh,
                    pre_nms_topk,
                    post_nms_topk,
                    self.min_box_size,
                    self.training,
                )
                for nms_thresh in (self.nms_thresh, self.nms_thresh_reg)
            )
        return [_mark_and_cat(c, r) for c, r in zip(cls_set, reg_set)]


def _top_candidates_per_level(
    boxes: List[torch.Tensor], logits: List[torch.Tensor], k: int
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """
    Args:
        boxes (list[Tensor]): per level, (N, Hi*Wi*A, 4) decoded proposals.
        logits (list[Tensor]): per level, (N, Hi*Wi*A) objectness logits.
        k (int): candidates kept per level and image.

    Returns:
        tuple[list[Tensor], list[Tensor]]: the same lists restricted to the top-k of each
        level, (N, ki, 4) and (N, ki), sorted by decreasing logit.
    """
    top_boxes, top_logits = [], []
    for boxes_i, logits_i in zip(boxes, logits):
        logits_i, idx = logits_i.topk(min(k, logits_i.shape[1]), dim=1)
        top_boxes.append(boxes_i.gather(1, idx.unsqueeze(-1).expand(-1, -1, boxes_i.shape[-1])))
        top_logits.append(logits_i)
    return top_boxes, top_logits


def _mark_and_cat(cls_set: Instances, reg_set: Instances) -> Instances:
    """Concatenates one image's two proposal sets, marking the regression set."""
    for instances, is_reg in ((cls_set, False), (reg_set, True)):
        device = instances.objectness_logits.device
        instances.set(REG_SET_FIELD, torch.full((len(instances),), is_reg, device=device))
    return Instances.cat([cls_set, reg_set])


def split_decoupled_proposals(
    proposals: List[Instances],
) -> Tuple[List[Instances], List[Instances]]:
    """
    Inverse of the packing done by :class:`DecoupledRPN` in training.

    Args:
        proposals (list[Instances]): per image, both sets with the "for_regression" field.

    Returns:
        tuple[list[Instances], list[Instances]]: per image ``Proposals_cls`` and
        ``Proposals_reg``, each with the fields "proposal_boxes" and "objectness_logits".
    """
    if proposals and not proposals[0].has(REG_SET_FIELD):
        raise ValueError(
            "DecoupledROIHeads needs the two proposal sets of DecoupledRPN in training: "
            "set MODEL.PROPOSAL_GENERATOR.NAME to 'DecoupledRPN'"
        )
    cls_sets, reg_sets = [], []
    for p in proposals:
        is_reg = p.get(REG_SET_FIELD)
        for mask, out in ((~is_reg, cls_sets), (is_reg, reg_sets)):
            subset = p[mask]
            subset.remove(REG_SET_FIELD)
            out.append(subset)
    return cls_sets, reg_sets
