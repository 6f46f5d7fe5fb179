"""
Per-head predictions for the analysis tools, and class-box selection, one protocol for every
RoI-heads class.

Shape shorthand:

    R: number of RoIs (boxes) a function is given; in :func:`predict_per_head`, those of one
       image
    K: number of foreground classes; a classifier has K + 1 outputs, the last for background
    C: number of feature channels
    P: the pooler's output resolution: pooled RoI features are P x P
    D: length of the feature vector a box head outputs per RoI

A project's RoI-heads class implements
    named_box_heads() -> {name: box head}                      pooled (R, C, P, P) -> (R, D)
    predict_per_head(features, proposals, classes) -> {name: HeadOutput}
    disable_fast_paths()                       every head on every proposal (FLOP counts)
:func:`named_box_heads`, :func:`predict_per_head` and :func:`disable_fast_paths` call them, and
cover Detectron2's StandardROIHeads (the FPN baseline: one head) themselves; a box head class
may give its name there with a class attribute `analysis_name`.
"""

import contextlib
from typing import Dict, Iterator, List, NamedTuple, Optional

import torch
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardROIHeads
from detectron2.structures import Instances
from torch import nn

__all__ = [
    "HeadOutput", "select_class_boxes", "class_probability", "named_box_heads", "predict_per_head",
    "disable_fast_paths", "count_head_rois",
]  # fmt: skip


class HeadOutput(NamedTuple):
    """What one head says about R boxes, for the class each box is asked about."""

    scores: Optional[torch.Tensor]  # (R,) probability of the class; None: no classifier
    boxes: Optional[
        torch.Tensor
    ]  # (R, 4) box regressed with that class's deltas; None: no regressor


def select_class_boxes(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, 4K) class-specific or (R, 4) class-agnostic boxes or deltas -> (R, 4) of `classes` (R,)."""
    if x.shape[1] == 4:
        return x
    return x.unflatten(1, (-1, 4))[torch.arange(len(x), device=x.device), classes]


def class_probability(probs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, K + 1) probabilities -> (R,) probability of `classes` (R,)."""
    return probs.gather(1, classes[:, None])[:, 0]


def _is_standard(roi_heads: nn.Module) -> bool:
    return isinstance(roi_heads, StandardROIHeads) and isinstance(
        roi_heads.box_predictor, FastRCNNOutputLayers
    )


def _check_supported(roi_heads: nn.Module):
    if not (hasattr(roi_heads, "predict_per_head") or _is_standard(roi_heads)):
        raise ValueError(
            f"The analyses do not know RoI heads {type(roi_heads).__name__}: they need StandardROIHeads "
            "(one box head) or a class with named_box_heads() and predict_per_head() (detcommon.heads)."
        )


def _standard_head_name(head: nn.Module) -> str:
    """A box head's name in the analyses: its class's `analysis_name` if it has one, "fc" for a
    2-fc head, else "box_head"."""
    if getattr(head, "analysis_name", None):
        return head.analysis_name
    if isinstance(head, FastRCNNConvFCHead) and head.fcs and not head.conv_norm_relus:
        return "fc"
    return "box_head"


def named_box_heads(roi_heads: nn.Module) -> Dict[str, nn.Module]:
    """name -> box head (pooled (R, C, P, P) -> (R, D)) of every head of `roi_heads`."""
    _check_supported(roi_heads)
    if hasattr(roi_heads, "named_box_heads"):
        return roi_heads.named_box_heads()
    return {_standard_head_name(roi_heads.box_head): roi_heads.box_head}


def predict_per_head(
    roi_heads: nn.Module,
    features: List[torch.Tensor],
    proposals: List[Instances],
    classes: torch.Tensor,
) -> Dict[str, HeadOutput]:
    """
    Every head of `roi_heads` on the boxes of one image.

    Args:
        features (list[Tensor]): the pooler's feature maps (`roi_heads.box_in_features`),
            batch of 1.
        proposals (list[Instances]): one Instances with "proposal_boxes" (R boxes).
        classes (Tensor): (R,) class in [0, K) each box is asked about.

    Returns:
        dict[str, HeadOutput]: head name -> HeadOutput (boxes not clipped).
    """
    _check_supported(roi_heads)
    if hasattr(roi_heads, "predict_per_head"):
        return roi_heads.predict_per_head(features, proposals, classes)
    predictor = roi_heads.box_predictor
    pooled = roi_heads.box_pooler(features, [p.proposal_boxes for p in proposals])
    predictions = predictor(roi_heads.box_head(pooled))
    probs = predictor.predict_probs(predictions, proposals)[0]
    boxes = predictor.predict_boxes(predictions, proposals)[0]
    name = _standard_head_name(roi_heads.box_head)
    return {name: HeadOutput(class_probability(probs, classes), select_class_boxes(boxes, classes))}


def disable_fast_paths(roi_heads: nn.Module) -> nn.Module:
    """Turns off the inference shortcuts of `roi_heads` that skip boxes by score (so that FLOP
    counts with random weights cover every head on every box); StandardROIHeads has none."""
    if hasattr(roi_heads, "disable_fast_paths"):
        roi_heads.disable_fast_paths()
    return roi_heads


@contextlib.contextmanager
def count_head_rois(roi_heads: nn.Module) -> Iterator[Dict[str, int]]:
    """
    Counts the RoIs each box head of `roi_heads` runs on (what a fast path leaves it).

    Yields:
        dict[str, int]: head name (:func:`named_box_heads`) -> RoIs that head's forward calls
        got since the context was entered, updated by every forward; the hooks go on exit.
    """
    heads = named_box_heads(roi_heads)
    counts = dict.fromkeys(heads, 0)

    def counter(name):
        def hook(module, inputs, output):
            counts[name] += len(output)

        return hook

    handles = [head.register_forward_hook(counter(name)) for name, head in heads.items()]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()
