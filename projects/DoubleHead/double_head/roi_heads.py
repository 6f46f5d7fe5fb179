"""
RoI heads of Double-Head (Wu et al., "Rethinking Classification and Localization", CVPR 2020).

Shape shorthand:

    R: number of RoIs (boxes) of the batch, all images together
    K: number of foreground classes; a classifier has K + 1 outputs, the last for background
    C: number of feature channels
    P: the pooler's output resolution: pooled RoI features are P x P
    D: length of the feature vector a box head outputs per RoI
"""

from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    StandardROIHeads,
)
from detectron2.structures import Boxes, Instances
from torch import nn
from torchvision.ops import clip_boxes_to_image

from detcommon.heads import HeadOutput, class_probability, select_class_boxes
from detcommon.poolers import EnlargedROIPooler, enlarge_boxes

from .outputs import (
    FUSIONS,
    TEST_MODES,
    DoubleHeadOutputLayers,
    check_test_mode,
    detect,
    fuse_scores,
    loss_term_weights,
)

__all__ = ["DoubleHeadROIHeads", "CONV_ROI_POOLINGS"]

# How the conv branch pools a proposal enlarged by CONV_ROI_SCALE, value -> description.
CONV_ROI_POOLINGS = {
    # the authors' PoolerNeighbor (and MMDetection's roi_scale_factor)
    "original_level": "on the FPN level of the proposal itself, the enlarged box not clipped",
    # this project's earlier pooling: a plain ROIPooler on the enlarged, clipped boxes
    "enlarged_clipped": "the enlarged box clipped to the image, on the FPN level of that box",
}


def _needs_conv_pooler(conv_roi_scale: float, conv_roi_pooling: str) -> bool:
    """
    Whether the conv branch needs a pooler of its own (an :class:`EnlargedROIPooler`). Raises
    ValueError naming the MODEL.DOUBLE_HEAD key of a bad scale or pooling.
    """
    if not conv_roi_scale > 0:
        raise ValueError(
            f"MODEL.DOUBLE_HEAD.CONV_ROI_SCALE must be > 0, got {conv_roi_scale}: use 1.3 "
            "(authors' code) or 1.0 (no enlargement)"
        )
    if conv_roi_pooling not in CONV_ROI_POOLINGS:
        raise ValueError(
            f"MODEL.DOUBLE_HEAD.CONV_ROI_POOLING must be one of {sorted(CONV_ROI_POOLINGS)}, "
            f"got {conv_roi_pooling!r}: use 'original_level' (authors' code)"
        )
    return conv_roi_pooling == "original_level" and conv_roi_scale != 1.0


@ROI_HEADS_REGISTRY.register()
class DoubleHeadROIHeads(StandardROIHeads):
    """
    Box prediction of Double-Head: two branches on the same proposals, "fc" (a 2-fc head, focused
    on classification) and "conv" (:class:`DoubleHeadConvHead`, focused on box regression, pooled
    from proposals enlarged by `conv_roi_scale` as :data:`CONV_ROI_POOLINGS` says), each with its
    own classifier and class-specific box regressor, trained with the weighted losses of Eq. 1-3
    and combined at test time by one of the modes of Fig. 6 (see :data:`TEST_MODES`). Mask and
    keypoint heads, if any, work as in :class:`StandardROIHeads` on the predicted boxes.

    At inference only the branches of the mode run; in the modes that score with the fc branch
    and box with the conv branch, the conv branch may run only on the proposals the fc scores
    let through (`fast_path`, `fused_prefilter_thresh`).
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_heads: Dict[str, nn.Module],
        box_predictors: Dict[str, DoubleHeadOutputLayers],
        conv_box_pooler: Optional[EnlargedROIPooler] = None,
        conv_roi_scale: float = 1.3,
        conv_roi_pooling: str = "original_level",
        test_mode: str = "fused",
        fusion: str = "complementary",
        eval_modes: Sequence[str] = (),
        fast_path: bool = True,
        fused_prefilter_thresh: float = 0.0,
        **kwargs,
    ):
        """
        Args:
            box_in_features (list[str]): as for :class:`StandardROIHeads`.
            box_pooler (ROIPooler): as for :class:`StandardROIHeads`; it pools the fc branch,
                and the conv branch unless `conv_box_pooler` does.
            box_heads (dict[str, nn.Module]): branch ("fc" and/or "conv") -> box head,
                (R, C, P, P) -> (R, D).
            box_predictors (dict[str, DoubleHeadOutputLayers]): branch -> its
                :class:`DoubleHeadOutputLayers`; a branch whose loss weights are both 0 is left
                out of both dicts.
            conv_box_pooler (EnlargedROIPooler or None): pools the conv branch in the
                "original_level" pooling: an :class:`EnlargedROIPooler` with scale
                `conv_roi_scale`. None otherwise, or if `conv_roi_scale` is 1 (both branches
                then share one pooling).
            conv_roi_scale (float): the conv branch pools proposals enlarged by this factor
                about their centres.
            conv_roi_pooling (str): how, a key of :data:`CONV_ROI_POOLINGS`: "original_level"
                (the authors') or "enlarged_clipped" (`box_pooler` on the enlarged boxes clipped
                to the image).
            test_mode (str): the inference mode of :meth:`forward`, a key of :data:`TEST_MODES`.
            fusion (str): how the "fused" mode combines the two classifiers, a key of
                :data:`FUSIONS`.
            eval_modes (Sequence[str]): modes :meth:`predict_modes` may be asked for; checked
                here like `test_mode`.
            fast_path (bool): in the "double" mode, run the conv branch only on the proposals
                whose best foreground fc probability reaches the test score threshold: the
                proposals below it are never detected, so the detections are those of the full
                path.
            fused_prefilter_thresh (float): if > 0, in the "fused" mode, run the conv branch
                only on the proposals whose best foreground fc probability reaches it. This
                drops proposals that fusion would have raised above the score threshold: opt-in.
            kwargs: the other arguments of :class:`StandardROIHeads`.
        """
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=None,
            box_predictor=None,
            **kwargs,
        )
        if self.train_on_pred_boxes:
            raise ValueError("DoubleHeadROIHeads does not support TRAIN_ON_PRED_BOXES")
        if _needs_conv_pooler(conv_roi_scale, conv_roi_pooling):
            if getattr(conv_box_pooler, "scale", None) != conv_roi_scale:
                raise ValueError(
                    f"conv_roi_pooling 'original_level' needs conv_box_pooler, an "
                    f"EnlargedROIPooler of scale {conv_roi_scale}, got {conv_box_pooler!r}"
                )
        elif conv_box_pooler is not None:
            raise ValueError(
                f"conv_box_pooler is unused with conv_roi_scale {conv_roi_scale} and "
                f"conv_roi_pooling {conv_roi_pooling!r}: pass None"
            )
        if fusion not in FUSIONS:
            raise ValueError(
                f"MODEL.DOUBLE_HEAD.FUSION must be one of {sorted(FUSIONS)}, got {fusion!r}"
            )
        if not 0 <= fused_prefilter_thresh <= 1:
            raise ValueError(
                "MODEL.DOUBLE_HEAD.FUSED_PREFILTER_THRESH must be in [0, 1], "
                f"got {fused_prefilter_thresh}"
            )
        weights = {branch: p.loss_weight for branch, p in box_predictors.items()}
        check_test_mode(test_mode, weights)
        for mode in eval_modes:
            check_test_mode(mode, weights, key="MODEL.DOUBLE_HEAD.EVAL_MODES")
        self.box_heads = nn.ModuleDict(box_heads)
        self.box_predictors = nn.ModuleDict(box_predictors)
        self.conv_box_pooler = conv_box_pooler
        self.conv_roi_scale = conv_roi_scale
        self.conv_roi_pooling = conv_roi_pooling
        self.test_mode = test_mode
        self.fusion = fusion
        self.eval_modes = list(eval_modes)
        self.fast_path = fast_path
        self.fused_prefilter_thresh = fused_prefilter_thresh

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        dh = cfg.MODEL.DOUBLE_HEAD
        ret.update(
            conv_roi_scale=dh.CONV_ROI_SCALE,
            conv_roi_pooling=dh.CONV_ROI_POOLING,
            test_mode=dh.TEST_MODE,
            fusion=dh.FUSION,
            eval_modes=dh.EVAL_MODES,
            fast_path=dh.FAST_PATH,
            fused_prefilter_thresh=dh.FUSED_PREFILTER_THRESH,
        )
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        # One head serves every level, so the levels must have the same number of channels.
        in_channels = {input_shape[f].channels for f in in_features}
        assert len(in_channels) == 1, in_channels
        pooler_args = dict(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        box_pooler = ROIPooler(**pooler_args)
        scale = cfg.MODEL.DOUBLE_HEAD.CONV_ROI_SCALE
        conv_box_pooler = None
        if _needs_conv_pooler(scale, cfg.MODEL.DOUBLE_HEAD.CONV_ROI_POOLING):
            conv_box_pooler = EnlargedROIPooler(**pooler_args, scale=scale)
        pooled_shape = ShapeSpec(channels=in_channels.pop(), height=resolution, width=resolution)

        weights = loss_term_weights(cfg)
        head_names = {
            "fc": cfg.MODEL.DOUBLE_HEAD.CLS_HEAD_NAME,
            "conv": cfg.MODEL.DOUBLE_HEAD.REG_HEAD_NAME,
        }
        box_heads, box_predictors = {}, {}
        for branch, name in head_names.items():
            if max(weights[branch].values()) <= 0:
                continue  # neither term of the branch is trained: no branch at all
            box_heads[branch] = ROI_BOX_HEAD_REGISTRY.get(name)(cfg, pooled_shape)
            box_predictors[branch] = DoubleHeadOutputLayers(
                cfg, box_heads[branch].output_shape, branch=branch
            )
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "conv_box_pooler": conv_box_pooler,
            "box_heads": box_heads,
            "box_predictors": box_predictors,
        }

    def _pooling(self, branch: str) -> str:
        """How `branch` pools: "proposals", or "enlarged" (conv branch, unless its scale is 1)."""
        return "enlarged" if branch == "conv" and self.conv_roi_scale != 1.0 else "proposals"

    def _pool(
        self, features: List[torch.Tensor], proposals: List[Instances], pooling: str
    ) -> torch.Tensor:
        """
        Returns:
            Tensor: (R, C, P, P) features of the R proposals of the batch, pooled as `pooling`
            says (see :meth:`_pooling`).
        """
        boxes = [p.proposal_boxes for p in proposals]
        if pooling == "proposals":
            return self.box_pooler(features, boxes)
        if self.conv_box_pooler is not None:  # "original_level"
            return self.conv_box_pooler(features, boxes)
        # "enlarged_clipped". Boxes.clip would first check on the host that every box is finite:
        # a GPU sync per image.
        enlarged = [
            Boxes(clip_boxes_to_image(enlarge_boxes(b, self.conv_roi_scale).tensor, p.image_size))
            for b, p in zip(boxes, proposals)
        ]
        return self.box_pooler(features, enlarged)

    def named_box_heads(self) -> Dict[str, nn.Module]:
        """The branches' box heads, "fc" and/or "conv" (see detcommon.heads)."""
        return dict(self.box_heads)

    def predict_per_head(
        self, features: List[torch.Tensor], proposals: List[Instances], classes: torch.Tensor
    ) -> Dict[str, HeadOutput]:
        """
        Each branch's probability of `classes` (R,) and box with that class's deltas, for what it
        was trained for (None otherwise), and "fused" (scores only, both classifiers fused by
        ``fusion``; the fused mode boxes with the conv branch) when both classify. See
        detcommon.heads.
        """
        probs, outputs = {}, {}
        for branch, (logits, deltas) in self._predict_branches(features, proposals).items():
            predictor = self.box_predictors[branch]
            scores = boxes = None
            if logits is not None:
                probs[branch] = predictor.predict_probs((logits, deltas), proposals)[0]
                scores = class_probability(probs[branch], classes)
            if deltas is not None:
                boxes = select_class_boxes(
                    predictor.predict_boxes((logits, deltas), proposals)[0], classes
                )
            outputs[branch] = HeadOutput(scores, boxes)
        cls_branches, _ = TEST_MODES["fused"]
        if all(b in probs for b in cls_branches):
            fused = fuse_scores(*(probs[b] for b in cls_branches), self.fusion)
            outputs["fused"] = HeadOutput(class_probability(fused, classes), None)
        return outputs

    def disable_fast_paths(self):
        """Run the conv branch on every proposal at inference (no `fast_path`, no prefilter)."""
        self.fast_path = False
        self.fused_prefilter_thresh = 0.0

    def _predict(self, branch: str, pooled: torch.Tensor) -> tuple:
        """(R, C, P, P) RoI features -> the branch's (scores (R, K + 1), deltas (R, 4K))."""
        return self.box_predictors[branch](self.box_heads[branch](pooled))

    def _predict_branches(
        self,
        features: List[torch.Tensor],
        proposals: List[Instances],
        branches: Optional[Sequence[str]] = None,
    ) -> Dict[str, tuple]:
        """
        Run each branch of `branches` (default: all) once on the proposals.

        Returns:
            dict[str, tuple]: branch -> (scores (R, K + 1) or None, deltas (R, 4K) or None).
        """
        pooled = {}  # pooling -> features (R, C, P, P): pooled once when the branches agree
        predictions = {}
        for branch in self.box_heads if branches is None else branches:
            pooling = self._pooling(branch)
            if pooling not in pooled:
                pooled[pooling] = self._pool(features, proposals, pooling)
            predictions[branch] = self._predict(branch, pooled[pooling])
        return predictions

    def _conv_prefilter_thresh(self) -> float:
        """
        The best foreground fc probability a proposal needs for the conv branch to run on it in
        `self.test_mode`; 0: every proposal.
        """
        if self.test_mode == "double" and self.fast_path:
            # the threshold detect() applies: the box regressor's
            return self.box_predictors["conv"].test_score_thresh
        if self.test_mode == "fused":
            return self.fused_prefilter_thresh
        return 0.0

    def _inference(self, features: List[torch.Tensor], proposals: List[Instances]):
        """
        Returns:
            list[Instances]: the detections of `self.test_mode`, per image, from the branches
            the mode uses.
        """
        cls_branches, reg_branch = TEST_MODES[self.test_mode]
        thresh = self._conv_prefilter_thresh()
        if thresh <= 0:
            branches = [b for b in self.box_heads if b in cls_branches or b == reg_branch]
            predictions = self._predict_branches(features, proposals, branches)
            return detect(self.test_mode, predictions, self.box_predictors, proposals, self.fusion)
        # fc scores, conv boxes: the fc probabilities choose the proposals the conv branch sees.
        fc_predictions = self._predict("fc", self._pool(features, proposals, "proposals"))
        fc_probs = self.box_predictors["fc"].predict_probs(fc_predictions, proposals)
        # per image, indices of the kept proposals: one GPU sync per image, then plain gathers
        keep = [torch.nonzero(p[:, :-1].max(dim=1).values >= thresh).squeeze(1) for p in fc_probs]
        kept = [p[k] for p, k in zip(proposals, keep)]
        conv_predictions = self._predict("conv", self._pool(features, kept, self._pooling("conv")))
        return detect(
            self.test_mode,
            {"conv": conv_predictions},
            self.box_predictors,
            kept,
            self.fusion,
            probs={"fc": [p[k] for p, k in zip(fc_probs, keep)]},
        )

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """
        Returns:
            dict[str, Tensor] or list[Instances]: in training, the weighted losses of both
            branches; in inference, the detections of `self.test_mode`, per image.
        """
        features = [features[f] for f in self.box_in_features]
        if not self.training:
            return self._inference(features, proposals)
        predictions = self._predict_branches(features, proposals)
        losses = {}
        for branch, predictor in self.box_predictors.items():
            losses.update(predictor.losses(predictions[branch], proposals))
        return losses

    def predict_modes(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances], modes: Sequence[str]
    ) -> Dict[str, List[Instances]]:
        """
        Detections of several inference modes from one run of each branch (inference only).

        Args:
            features (dict[str, Tensor]): as for :meth:`forward`.
            proposals (list[Instances]): as for :meth:`forward`.
            modes (Sequence[str]): keys of :data:`TEST_MODES`, each checked at build time
                (`eval_modes`) or here.

        Returns:
            dict[str, list[Instances]]: mode -> per-image detections, completed by the
            mask/keypoint heads if any.
        """
        assert not self.training
        weights = {branch: p.loss_weight for branch, p in self.box_predictors.items()}
        for mode in modes:
            check_test_mode(mode, weights, key="mode")
        predictions = self._predict_branches([features[f] for f in self.box_in_features], proposals)
        return {
            mode: self.forward_with_given_boxes(
                features, detect(mode, predictions, self.box_predictors, proposals, self.fusion)
            )
            for mode in modes
        }
