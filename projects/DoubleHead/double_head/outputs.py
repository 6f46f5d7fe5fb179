"""
The two predictors of Double-Head: loss terms of Eq. 1-3, score fusion (Eq. 4, Table 3) and the
inference modes of Fig. 6.

The two branches are called "fc" (focused on classification) and "conv" (focused on box
regression) after the heads the paper gives them; MODEL.DOUBLE_HEAD.CLS_HEAD_NAME and
REG_HEAD_NAME choose the box head of each, which is how the ablations of Table 1 swap them.

Shape shorthand:

    R: number of RoIs (boxes) of the batch, all images together
    Ri: number of RoIs of image i
    K: number of foreground classes; a classifier has K + 1 outputs, the last for background
    C: number of feature channels
    P: the pooler's output resolution: pooled RoI features are P x P
    D: length of the feature vector a box head outputs per RoI
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat, cross_entropy
from detectron2.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    _log_classification_stats,
    fast_rcnn_inference,
)
from detectron2.structures import Instances

__all__ = [
    "BRANCHES",
    "TEST_MODES",
    "FUSIONS",
    "DoubleHeadOutputLayers",
    "loss_term_weights",
    "fuse_scores",
    "check_test_mode",
    "detect",
]

BRANCHES = ("fc", "conv")

# mode -> (branches whose classifiers score the boxes, branch whose regressor places them)
TEST_MODES = {
    "conv": (("conv",), "conv"),  # Fig. 6a
    "fc": (("fc",), "fc"),  # Fig. 6b
    "double": (("fc",), "conv"),  # Fig. 6c, vanilla Double-Head
    "fused": (("fc", "conv"), "conv"),  # Fig. 6d, Double-Head-Ext
}

# Per-class fusion of the fc and conv softmax probabilities (Table 3).
FUSIONS = {
    "complementary": lambda s_fc, s_conv: s_fc + s_conv * (1 - s_fc),  # Eq. 4
    "average": lambda s_fc, s_conv: (s_fc + s_conv) / 2,
    "max": torch.maximum,
}

# The config arithmetic behind each loss term, for error messages.
_TERM_FORMULAS = {
    ("fc", "loss_cls"): "LOSS_WEIGHT_FC * LAMBDA_FC",
    ("fc", "loss_box_reg"): "LOSS_WEIGHT_FC * (1 - LAMBDA_FC)",
    ("conv", "loss_cls"): "LOSS_WEIGHT_CONV * (1 - LAMBDA_CONV)",
    ("conv", "loss_box_reg"): "LOSS_WEIGHT_CONV * LAMBDA_CONV",
}


def loss_term_weights(cfg) -> Dict[str, Dict[str, float]]:
    """
    Weights of the four loss terms (Eq. 1-3) from MODEL.DOUBLE_HEAD, after checking the keys.

    Returns:
        dict[str, dict[str, float]]:
        {"fc": {"loss_cls": w_fc * lambda_fc, "loss_box_reg": w_fc * (1 - lambda_fc)},
         "conv": {"loss_cls": w_conv * (1 - lambda_conv), "loss_box_reg": w_conv * lambda_conv}}
    """
    dh = cfg.MODEL.DOUBLE_HEAD
    for key in ("LOSS_WEIGHT_FC", "LOSS_WEIGHT_CONV"):
        if dh[key] < 0:
            raise ValueError(f"MODEL.DOUBLE_HEAD.{key} must be >= 0, got {dh[key]}")
    for key in ("LAMBDA_FC", "LAMBDA_CONV"):
        if not 0 <= dh[key] <= 1:
            raise ValueError(f"MODEL.DOUBLE_HEAD.{key} must be in [0, 1], got {dh[key]}")
    w_fc, w_conv = dh.LOSS_WEIGHT_FC, dh.LOSS_WEIGHT_CONV
    return {
        "fc": {"loss_cls": w_fc * dh.LAMBDA_FC, "loss_box_reg": w_fc * (1 - dh.LAMBDA_FC)},
        "conv": {
            "loss_cls": w_conv * (1 - dh.LAMBDA_CONV),
            "loss_box_reg": w_conv * dh.LAMBDA_CONV,
        },
    }


def fuse_scores(s_fc: torch.Tensor, s_conv: torch.Tensor, fusion: str) -> torch.Tensor:
    """
    Fuse two (R, K + 1) tensors of per-class probabilities into one, by a method of FUSIONS.
    """
    return FUSIONS[fusion](s_fc, s_conv)


def check_test_mode(
    mode: str, weights: Dict[str, Dict[str, float]], key: str = "MODEL.DOUBLE_HEAD.TEST_MODE"
):
    """
    Raise ValueError if `mode` is unknown or needs a classifier or box regressor that the loss
    never trains, given the term weights of :func:`loss_term_weights` (a missing branch: none).
    """
    if mode not in TEST_MODES:
        raise ValueError(f"{key} must be one of {sorted(TEST_MODES)}, got {mode!r}")
    cls_branches, reg_branch = TEST_MODES[mode]
    needed = [(b, "loss_cls") for b in cls_branches] + [(reg_branch, "loss_box_reg")]
    for branch, term in needed:
        if weights.get(branch, {}).get(term, 0.0) <= 0:
            part = "classifier" if term == "loss_cls" else "box regressor"
            raise ValueError(
                f"{key}={mode!r} uses the {branch} branch's {part}, which is never trained: "
                f"its loss weight MODEL.DOUBLE_HEAD.{_TERM_FORMULAS[branch, term]} is 0. "
                f"Choose a mode among those the loss trains, or change the weights."
            )


class DoubleHeadOutputLayers(FastRCNNOutputLayers):
    """
    Classifier (K + 1 logits) and class-specific box regressor (4K deltas) of one Double-Head
    branch. Only the layers whose loss weight is positive are built: a layer no loss trains
    would be left at its random initialisation. Its losses come already weighted, named
    "loss_cls_<branch>" and "loss_box_reg_<branch>".
    """

    @configurable
    def __init__(self, input_shape, *, branch: str, loss_weight: Dict[str, float], **kwargs):
        """
        Args:
            input_shape (ShapeSpec): as for :class:`FastRCNNOutputLayers`.
            branch (str): "fc" or "conv", the suffix of the loss names.
            loss_weight (dict[str, float]): {"loss_cls": weight, "loss_box_reg": weight}, see
                :func:`loss_term_weights`; a weight of 0 removes the layer and its loss.
            kwargs: as for :class:`FastRCNNOutputLayers`.
        """
        super().__init__(input_shape, loss_weight=loss_weight, **kwargs)
        self.branch = branch
        if loss_weight["loss_cls"] <= 0:
            self.cls_score = None
        if loss_weight["loss_box_reg"] <= 0:
            self.bbox_pred = None

    @classmethod
    def from_config(cls, cfg, input_shape, branch):
        ret = super().from_config(cfg, input_shape)
        ret["branch"] = branch
        ret["loss_weight"] = loss_term_weights(cfg)[branch]
        return ret

    def forward(self, x) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """
        Args:
            x (Tensor): per-RoI features, (R, D) or (R, C, P, P).

        Returns:
            tuple[Tensor or None, Tensor or None]: scores (R, K + 1) and deltas (R, 4K); None
            for a layer that is not built.
        """
        x = torch.flatten(x, start_dim=1)
        scores = self.cls_score(x) if self.cls_score is not None else None
        deltas = self.bbox_pred(x) if self.bbox_pred is not None else None
        return scores, deltas

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """
        Args:
            predictions (tuple[Tensor or None, Tensor or None]): return value of :meth:`forward`.
            proposals (list[Instances]): the sampled proposals with "proposal_boxes",
                "gt_classes", "gt_boxes".

        Returns:
            dict[str, Tensor]: the weighted loss of each built layer.
        """
        scores, deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        losses = {}
        if scores is not None:
            _log_classification_stats(scores, gt_classes, prefix=f"double_head_{self.branch}")
            if self.use_sigmoid_ce:
                loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
            else:
                loss_cls = cross_entropy(scores, gt_classes, reduction="mean")
            losses[f"loss_cls_{self.branch}"] = self.loss_weight["loss_cls"] * loss_cls
        if deltas is not None:
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            # Proposals without "gt_boxes" are all background: their boxes are never used.
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
            loss_box_reg = self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes)
            losses[f"loss_box_reg_{self.branch}"] = self.loss_weight["loss_box_reg"] * loss_box_reg
        return losses


def detect(
    mode: str,
    predictions: Dict[str, tuple],
    predictors: Dict[str, DoubleHeadOutputLayers],
    proposals: List[Instances],
    fusion: str = "complementary",
    probs: Optional[Dict[str, List[torch.Tensor]]] = None,
) -> List[Instances]:
    """
    Detections of one inference mode: boxes from the mode's regressor, scores from its
    classifier(s), then per-class NMS as :func:`fast_rcnn_inference` does.

    Args:
        mode (str): a key of TEST_MODES.
        predictions (dict[str, tuple]): branch -> (scores, deltas) of
            :meth:`DoubleHeadOutputLayers.forward`; a classifier whose `probs` are given needs
            no entry.
        predictors (dict[str, DoubleHeadOutputLayers]): branch -> its
            :class:`DoubleHeadOutputLayers`.
        proposals (list[Instances]): per image, the proposals the predictions were made for.
        fusion (str): a key of FUSIONS, used when the mode has two classifiers.
        probs (dict[str, list[Tensor]] or None): branch -> per image, its class probabilities
            (Ri, K + 1), if already computed.

    Returns:
        list[Instances]: per image, Instances with "pred_boxes", "scores" and "pred_classes".
    """
    cls_branches, reg_branch = TEST_MODES[mode]
    given = probs or {}
    # per image, per-class probabilities (Ri, K + 1) of each classifier, then fused
    probs = [
        given[b] if b in given else predictors[b].predict_probs(predictions[b], proposals)
        for b in cls_branches
    ]
    scores = probs[0] if len(probs) == 1 else [fuse_scores(*s, fusion) for s in zip(*probs)]
    regressor = predictors[reg_branch]
    boxes = regressor.predict_boxes(predictions[reg_branch], proposals)  # per image (Ri, 4K)
    detections, _ = fast_rcnn_inference(
        boxes,
        scores,
        [p.image_size for p in proposals],
        regressor.test_score_thresh,
        regressor.test_nms_thresh,
        regressor.test_topk_per_image,
    )
    return detections
