"""
Runs the box heads of a trained model, head by head, on boxes the caller chooses.

Three kinds of RoI heads are known:

- :class:`StandardROIHeads` (FPN baseline): one head, named "fc" (a 2-fc head), "conv" (a
  :class:`DoubleHeadConvHead`) or "box_head" (anything else);
- :class:`DoubleHeadROIHeads`: its branches "fc" and "conv", each with whatever it was trained
  for (classifier and/or box regressor), and "fused" (scores only: both classifiers fused as
  the model's `fusion` says; the fused mode's boxes are the conv branch's) when both
  classifiers exist;
- :class:`DecoupledROIHeads`: "classifier" (scores only) and "regressor" (the boxes of the
  model's test stage, after every earlier stage; boxes only).
"""

from typing import Dict, List, NamedTuple, Optional

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardROIHeads
from detectron2.structures import Boxes, Instances

from decoupled_rcnn import DecoupledROIHeads
from decoupled_rcnn.roi_heads import select_class_boxes
from double_head import DoubleHeadConvHead, DoubleHeadROIHeads
from double_head.outputs import TEST_MODES, fuse_scores

__all__ = ["HeadOutput", "box_heads", "fc_heads", "conv_heads", "predict_heads", "describe_heads"]


class HeadOutput(NamedTuple):
    """What one head says about R boxes, for the class each box is asked about."""

    scores: Optional[torch.Tensor]  # (R,) probability of the class; None: no classifier
    boxes: Optional[
        torch.Tensor
    ]  # (R, 4) box regressed with that class's deltas; None: no regressor


def _check_supported(roi_heads: nn.Module):
    if isinstance(roi_heads, (DoubleHeadROIHeads, DecoupledROIHeads)):
        return
    if isinstance(roi_heads, StandardROIHeads) and isinstance(
        roi_heads.box_predictor, FastRCNNOutputLayers
    ):
        return
    raise ValueError(
        f"The analyses do not know RoI heads {type(roi_heads).__name__}: they work on "
        "StandardROIHeads (one box head), DoubleHeadROIHeads and DecoupledROIHeads."
    )


def _standard_head_name(head: nn.Module) -> str:
    if isinstance(head, FastRCNNConvFCHead) and head.fcs and not head.conv_norm_relus:
        return "fc"
    if isinstance(head, DoubleHeadConvHead):
        return "conv"
    return "box_head"


def box_heads(roi_heads: nn.Module) -> Dict[str, nn.Module]:
    """
    Returns:
        name -> box head (pooled features (R, C, H, W) -> (R, D)) of every head the model has.
    """
    _check_supported(roi_heads)
    if isinstance(roi_heads, DoubleHeadROIHeads):
        return dict(roi_heads.box_heads)
    if isinstance(roi_heads, DecoupledROIHeads):
        stages = {f"regressor_stage{k + 1}": head for k, head in enumerate(roi_heads.reg_heads)}
        return {"classifier": roi_heads.box_head, **stages}
    return {_standard_head_name(roi_heads.box_head): roi_heads.box_head}


def describe_heads(roi_heads: nn.Module) -> str:
    """A one-line list of the model's heads and their types, for error messages."""
    heads = ", ".join(f"{name}={type(h).__name__}" for name, h in box_heads(roi_heads).items())
    return f"{type(roi_heads).__name__} with box heads {heads}"


def fc_heads(roi_heads: nn.Module) -> Dict[str, FastRCNNConvFCHead]:
    """Heads whose first layer on the flattened RoI features is an fc layer (`head.fcs[0]`)."""
    return {
        name: head
        for name, head in box_heads(roi_heads).items()
        if isinstance(head, FastRCNNConvFCHead) and head.fcs
    }


def conv_heads(roi_heads: nn.Module) -> Dict[str, DoubleHeadConvHead]:
    """The model's :class:`DoubleHeadConvHead` heads."""
    return {
        name: head
        for name, head in box_heads(roi_heads).items()
        if isinstance(head, DoubleHeadConvHead)
    }


def _class_prob(probs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, K + 1) probabilities -> (R,) probability of `classes` (R,)."""
    return probs.gather(1, classes[:, None])[:, 0]


def _standard(roi_heads, features, proposals, classes) -> Dict[str, HeadOutput]:
    pooled = roi_heads.box_pooler(features, [p.proposal_boxes for p in proposals])
    predictor = roi_heads.box_predictor
    predictions = predictor(roi_heads.box_head(pooled))
    probs = predictor.predict_probs(predictions, proposals)[0]
    boxes = predictor.predict_boxes(predictions, proposals)[0]
    name = _standard_head_name(roi_heads.box_head)
    return {name: HeadOutput(_class_prob(probs, classes), select_class_boxes(boxes, classes))}


def _double_head(roi_heads, features, proposals, classes) -> Dict[str, HeadOutput]:
    predictions = roi_heads._predict_branches(features, proposals)
    probs, outputs = {}, {}
    for branch, (logits, deltas) in predictions.items():
        predictor = roi_heads.box_predictors[branch]
        scores = boxes = None
        if logits is not None:
            probs[branch] = predictor.predict_probs((logits, deltas), proposals)[0]
            scores = _class_prob(probs[branch], classes)
        if deltas is not None:
            boxes = select_class_boxes(predictor.predict_boxes((logits, deltas), proposals)[0], classes)
        outputs[branch] = HeadOutput(scores, boxes)
    cls_branches, _ = TEST_MODES["fused"]
    if all(b in probs for b in cls_branches):
        fused = fuse_scores(*(probs[b] for b in cls_branches), roi_heads.fusion)
        scores = _class_prob(fused, classes)
        outputs["fused"] = HeadOutput(scores, None)  # its boxes are the conv branch's
    return outputs


def _decoupled(roi_heads, features, proposals, classes) -> Dict[str, HeadOutput]:
    pooled = roi_heads.box_pooler(features, [p.proposal_boxes for p in proposals])
    probs = F.softmax(roi_heads._classify(pooled), dim=-1)
    proposals = roi_heads.regress_stages(features, proposals, pooled, classes)
    return {
        "classifier": HeadOutput(_class_prob(probs, classes), None),
        "regressor": HeadOutput(None, proposals[0].proposal_boxes.tensor),
    }


@torch.no_grad()
def predict_heads(
    roi_heads: nn.Module,
    features: Dict[str, torch.Tensor],
    boxes: torch.Tensor,
    image_size: tuple,
    classes: torch.Tensor,
) -> Dict[str, HeadOutput]:
    """
    Run every head of `roi_heads` (in eval mode) on boxes of one image.

    Args:
        features: the backbone's features of the image (batch of 1).
        boxes: (R, 4) XYXY boxes in the input image's frame.
        image_size: (h, w) of the input image (before padding).
        classes: (R,) contiguous class in [0, K) each box is asked about.

    Returns:
        head name -> :class:`HeadOutput`, boxes clipped to the image as detections are.
    """
    _check_supported(roi_heads)
    proposals: List[Instances] = [Instances(image_size, proposal_boxes=Boxes(boxes))]
    features = [features[f] for f in roi_heads.box_in_features]
    if isinstance(roi_heads, DoubleHeadROIHeads):
        outputs = _double_head(roi_heads, features, proposals, classes)
    elif isinstance(roi_heads, DecoupledROIHeads):
        outputs = _decoupled(roi_heads, features, proposals, classes)
    else:
        outputs = _standard(roi_heads, features, proposals, classes)
    clipped = {}
    for name, out in outputs.items():
        if out.boxes is not None:
            boxes = Boxes(out.boxes)
            boxes.clip(image_size)
            out = out._replace(boxes=boxes.tensor)
        clipped[name] = out
    return clipped
