"""RoI heads of Double-Head (Wu et al., "Rethinking Classification and Localization", CVPR 2020)."""

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    StandardROIHeads,
)
from detectron2.structures import Boxes, Instances

from .outputs import (
    FUSIONS,
    DoubleHeadOutputLayers,
    check_test_mode,
    detect,
    loss_term_weights,
)

__all__ = ["DoubleHeadROIHeads", "enlarge_boxes"]


def enlarge_boxes(boxes: Boxes, scale: float, image_size: Tuple[int, int]) -> Boxes:
    """
    Returns:
        the (R, 4) `boxes` scaled by `scale` about their centres, clipped to `image_size` (h, w).
    """
    centers = boxes.get_centers()  # (R, 2)
    half_sizes = (boxes.tensor[:, 2:] - boxes.tensor[:, :2]) * (scale / 2)
    enlarged = Boxes(torch.cat([centers - half_sizes, centers + half_sizes], dim=1))
    enlarged.clip(image_size)
    return enlarged


@ROI_HEADS_REGISTRY.register()
class DoubleHeadROIHeads(StandardROIHeads):
    """
    Box prediction of Double-Head: two branches on the same proposals, "fc" (a 2-fc head, focused
    on classification) and "conv" (:class:`DoubleHeadConvHead`, focused on box regression, pooled
    from proposals enlarged by `conv_roi_scale`), each with its own classifier and class-specific
    box regressor, trained with the weighted losses of Eq. 1-3 and combined at test time by one
    of the modes of Fig. 6 (see :data:`TEST_MODES`). Mask and keypoint heads, if any, work as in
    :class:`StandardROIHeads` on the predicted boxes.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_heads: Dict[str, nn.Module],
        box_predictors: Dict[str, DoubleHeadOutputLayers],
        conv_roi_scale: float = 1.3,
        test_mode: str = "fused",
        fusion: str = "complementary",
        eval_modes: Sequence[str] = (),
        **kwargs,
    ):
        """
        Args:
            box_in_features, box_pooler: as for :class:`StandardROIHeads`; the pooler serves both
                branches.
            box_heads: branch ("fc" and/or "conv") -> box head, (R, C, H, W) -> (R, D).
            box_predictors: branch -> its :class:`DoubleHeadOutputLayers`; a branch whose loss
                weights are both 0 is left out of both dicts.
            conv_roi_scale: the conv branch pools proposals enlarged by this factor about their
                centres, clipped to the image.
            test_mode: the inference mode of :meth:`forward`, a key of :data:`TEST_MODES`.
            fusion: how the "fused" mode combines the two classifiers, a key of :data:`FUSIONS`.
            eval_modes: modes :meth:`predict_modes` may be asked for; checked here like
                `test_mode`.
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
        if conv_roi_scale <= 0:
            raise ValueError(f"MODEL.DOUBLE_HEAD.CONV_ROI_SCALE must be > 0, got {conv_roi_scale}")
        if fusion not in FUSIONS:
            raise ValueError(
                f"MODEL.DOUBLE_HEAD.FUSION must be one of {sorted(FUSIONS)}, got {fusion!r}"
            )
        weights = {branch: p.loss_weight for branch, p in box_predictors.items()}
        check_test_mode(test_mode, weights)
        for mode in eval_modes:
            check_test_mode(mode, weights, key="MODEL.DOUBLE_HEAD.EVAL_MODES")
        self.box_heads = nn.ModuleDict(box_heads)
        self.box_predictors = nn.ModuleDict(box_predictors)
        self.conv_roi_scale = conv_roi_scale
        self.test_mode = test_mode
        self.fusion = fusion
        self.eval_modes = list(eval_modes)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        dh = cfg.MODEL.DOUBLE_HEAD
        ret.update(
            conv_roi_scale=dh.CONV_ROI_SCALE,
            test_mode=dh.TEST_MODE,
            fusion=dh.FUSION,
            eval_modes=dh.EVAL_MODES,
        )
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        # One head serves every level, so the levels must have the same number of channels.
        in_channels = {input_shape[f].channels for f in in_features}
        assert len(in_channels) == 1, in_channels
        box_pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
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
            "box_heads": box_heads,
            "box_predictors": box_predictors,
        }

    def _predict_branches(
        self, features: List[torch.Tensor], proposals: List[Instances]
    ) -> Dict[str, tuple]:
        """
        Run each branch once on the proposals.

        Returns:
            branch -> (scores (R, K + 1) or None, deltas (R, 4K) or None).
        """
        pooled = {}  # RoI scale -> pooled features (R, C, H, W); pooled once when scales agree
        predictions = {}
        for branch, head in self.box_heads.items():
            scale = self.conv_roi_scale if branch == "conv" else 1.0
            if scale not in pooled:
                boxes = [p.proposal_boxes for p in proposals]
                if scale != 1.0:
                    boxes = [
                        enlarge_boxes(b, scale, p.image_size) for b, p in zip(boxes, proposals)
                    ]
                pooled[scale] = self.box_pooler(features, boxes)
            predictions[branch] = self.box_predictors[branch](head(pooled[scale]))
        return predictions

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """
        Returns:
            In training, the weighted losses of both branches.
            In inference, the detections of `self.test_mode`, per image.
        """
        predictions = self._predict_branches([features[f] for f in self.box_in_features], proposals)
        if self.training:
            losses = {}
            for branch, predictor in self.box_predictors.items():
                losses.update(predictor.losses(predictions[branch], proposals))
            return losses
        return detect(self.test_mode, predictions, self.box_predictors, proposals, self.fusion)

    def predict_modes(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances], modes: Sequence[str]
    ) -> Dict[str, List[Instances]]:
        """
        Detections of several inference modes from one run of each branch (inference only).

        Args:
            features, proposals: as for :meth:`forward`.
            modes: keys of :data:`TEST_MODES`, each checked at build time (`eval_modes`) or here.

        Returns:
            mode -> per-image detections, completed by the mask/keypoint heads if any.
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
