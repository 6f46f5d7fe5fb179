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

from typing import Dict, List

import torch
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.structures import Boxes, Instances
from torch import nn

from ..heads import HeadOutput, named_box_heads, predict_per_head

__all__ = ["HeadOutput", "fc_heads", "conv_heads", "predict_heads", "describe_heads"]


def describe_heads(roi_heads: nn.Module) -> str:
    """A one-line list of the model's heads and their types, for error messages."""
    heads = ", ".join(
        f"{name}={type(h).__name__}" for name, h in named_box_heads(roi_heads).items()
    )
    return f"{type(roi_heads).__name__} with box heads {heads}"


def fc_heads(roi_heads: nn.Module) -> Dict[str, FastRCNNConvFCHead]:
    """Heads whose first layer on the flattened RoI features is an fc layer (`head.fcs[0]`)."""
    return {
        name: head
        for name, head in named_box_heads(roi_heads).items()
        if isinstance(head, FastRCNNConvFCHead) and head.fcs
    }


def conv_heads(roi_heads: nn.Module) -> Dict[str, nn.Module]:
    """The model's conv-heads: box heads whose class says `analysis_name = "conv"` (Double-Head's
    DoubleHeadConvHead) and whose `avgpool` takes their last block's (R, C, H, W) output."""
    return {
        name: head
        for name, head in named_box_heads(roi_heads).items()
        if getattr(head, "analysis_name", None) == "conv" and hasattr(head, "avgpool")
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
    proposals: List[Instances] = [Instances(image_size, proposal_boxes=Boxes(boxes))]
    features = [features[f] for f in roi_heads.box_in_features]
    outputs = predict_per_head(roi_heads, features, proposals, classes)
    clipped = {}
    for name, out in outputs.items():
        if out.boxes is not None:
            boxes = Boxes(out.boxes)
            boxes.clip(image_size)
            out = out._replace(boxes=boxes.tensor)
        clipped[name] = out
    return clipped
