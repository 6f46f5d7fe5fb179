"""
ROI heads of Decoupled R-CNN: an unshared classifier and a cascaded, positive-only regressor.

Shape shorthand:

    R: number of RoIs (boxes) of the batch, all images together
    Ri: number of RoIs of image i
    K: number of foreground classes; the classifier has K + 1 outputs, the last for background
    C: number of feature channels
    P: the pooler's output resolution: pooled RoI features are P x P
    S: number of regression stages (the cascade's length)
"""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling import ROI_BOX_HEAD_REGISTRY, ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats, fast_rcnn_inference
from detectron2.structures import Boxes, Instances
from fvcore.nn import smooth_l1_loss
from torch import nn
from torch.nn import functional as F

from detcommon.heads import HeadOutput, class_probability, select_class_boxes
from detcommon.poolers import EnlargedROIPooler

from .config import REG_LOSS_NORMALIZERS, check_decoupled_roi_heads_config
from .rpn import split_decoupled_proposals
from .sampling import sample_regression_proposals

__all__ = ["DecoupledROIHeads"]


@ROI_HEADS_REGISTRY.register()
class DecoupledROIHeads(StandardROIHeads):
    """
    The box head of Decoupled R-CNN (Wang et al.), with cascaded regression.

    * Classification: ``box_head`` (trunk) and ``box_predictor`` ((K + 1)-way linear layer),
      trained on ``batch_size_per_image`` RoIs at ``positive_fraction`` from the RPN's
      classification proposals plus ground truth. It is never cascaded.
    * Regression: stage k = 1..S has its own trunk ``reg_heads[k-1]`` and linear layer
      ``reg_predictors[k-1]``. Stage 1 (class-specific, pooled by ``reg_pooler``) is trained on
      the positives of the regression proposals; stage k > 1 (class-agnostic) on the detached
      boxes stage k-1 regressed from its positives, re-labelled; at most
      ``reg_batch_size_per_image`` positives per image and stage, no negatives.
    * Inference: the classifier scores the proposals once. "per_class" boxes: stage 1 gives
      every class its own box (Fast R-CNN decoding); "argmax": stage 1 regresses each proposal
      with its predicted foreground class, every later stage refines the previous stage's box.
      The boxes of stage ``test_stage`` and the classifier's scores go through class-wise NMS.

    Training needs the two proposal sets of :class:`DecoupledRPN`.
    """

    @configurable
    def __init__(
        self,
        *,
        reg_heads: List[nn.Module],
        reg_predictors: List[nn.Module],
        reg_box2box_transforms: List[Box2BoxTransform],
        reg_batch_size_per_image: int,
        reg_loss_weights: List[float],
        smooth_l1_beta: float,
        reg_loss_normalizer: str = "fixed",
        reg_loss_normalizer_per_image: float = 1024,
        reg_proposal_append_gt: bool = False,
        reg_pooler: Optional[ROIPooler] = None,
        test_stage: int,
        test_class_boxes: str = "auto",
        fast_path: bool = True,
        test_score_thresh: float,
        test_nms_thresh: float,
        test_topk_per_image: int,
        **kwargs,
    ):
        """
        Args:
            reg_heads (list[nn.Module]): per stage, the regression trunk on pooled RoI features;
                the first may be ``box_head`` itself (shared-FC ablation).
            reg_predictors (list[nn.Module]): per stage, maps the trunk's features to deltas,
                (R, 4K) class-specific or (R, 4) class-agnostic.
            reg_box2box_transforms (list[Box2BoxTransform]): per stage, the delta encoding.
            reg_batch_size_per_image (int): most positive RoIs per image and stage.
            reg_loss_weights (list[float]): per stage, the weight of its regression loss
                (the stage weight times lambda of Eq. 8).
            smooth_l1_beta (float): beta of the smooth-L1 regression loss; 0 gives L1.
            reg_loss_normalizer (str): what divides a stage's summed regression loss:
                "fixed", ``reg_loss_normalizer_per_image`` x images (the authors' padded
                sample); "num_samples", the stage's number of sampled positives.
            reg_loss_normalizer_per_image (float): RoIs per image of the "fixed" divisor.
            reg_proposal_append_gt (bool): add the ground-truth boxes to the regression
                proposals (the classification proposals follow ``proposal_append_gt``).
            reg_pooler (ROIPooler or None): pools the first regression stage's RoIs (e.g. an
                :class:`EnlargedROIPooler`); None: ``box_pooler``, as every later stage.
            test_stage (int): 1-based stage whose boxes are output at inference.
            test_class_boxes (str): "per_class", every class's box from stage 1 (needs
                ``test_stage`` 1); "argmax", one box per proposal, regressed with the
                predicted class; "auto", "per_class" for one stage, "argmax" for a cascade.
            fast_path (bool): at inference, regress only the proposals whose best foreground
                score reaches ``test_score_thresh``: the others cannot be detected, since the
                scores come from the classifier alone, so the detections are unchanged.
            test_score_thresh (float): as in :func:`fast_rcnn_inference`.
            test_nms_thresh (float): as in :func:`fast_rcnn_inference`.
            test_topk_per_image (int): as in :func:`fast_rcnn_inference`.
            kwargs: arguments of :class:`StandardROIHeads`; its ``box_head`` and
                ``box_predictor`` are the classifier's trunk and (K + 1)-way linear layer.
        """
        super().__init__(**kwargs)
        num_stages = len(reg_heads)
        assert len(reg_predictors) == len(reg_box2box_transforms) == num_stages
        assert len(reg_loss_weights) == num_stages and 1 <= test_stage <= num_stages
        self.reg_heads = nn.ModuleList(reg_heads)
        self.reg_predictors = nn.ModuleList(reg_predictors)
        self.reg_box2box_transforms = reg_box2box_transforms
        self.reg_batch_size_per_image = reg_batch_size_per_image
        self.reg_loss_weights = reg_loss_weights
        self.smooth_l1_beta = smooth_l1_beta
        assert reg_loss_normalizer in REG_LOSS_NORMALIZERS and reg_loss_normalizer_per_image > 0
        if test_class_boxes == "auto":
            test_class_boxes = "per_class" if num_stages == 1 else "argmax"
        assert test_class_boxes in ("per_class", "argmax")
        assert test_class_boxes == "argmax" or test_stage == 1
        self.reg_loss_normalizer = reg_loss_normalizer
        self.reg_loss_normalizer_per_image = reg_loss_normalizer_per_image
        self.reg_proposal_append_gt = reg_proposal_append_gt
        self.reg_pooler = reg_pooler
        self.test_stage = test_stage
        self.test_class_boxes = test_class_boxes
        self.fast_path = fast_path
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image

    @classmethod
    def from_config(cls, cfg, input_shape):
        check_decoupled_roi_heads_config(cfg)
        return super().from_config(cfg, input_shape)

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # The pooler and the classifier's trunk are StandardROIHeads'; its FastRCNNOutputLayers
        # (classifier + regressor) is replaced by a classifier-only linear layer.
        ret = super()._init_box_head(cfg, input_shape)
        d = cfg.MODEL.DECOUPLED
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        channels = input_shape[ret["box_in_features"][0]].channels
        pooled_shape = ShapeSpec(channels=channels, height=resolution, width=resolution)

        box_head = ret["box_head"]
        reg_pooler = None
        if d.REG_ROI_SCALE != 1.0:
            reg_pooler = EnlargedROIPooler(
                output_size=resolution,
                scales=tuple(1.0 / input_shape[f].stride for f in ret["box_in_features"]),
                sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
                pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
                scale=d.REG_ROI_SCALE,
            )
        first_reg_head = (
            box_head
            if d.SHARE_FC
            else ROI_BOX_HEAD_REGISTRY.get(d.REG_HEAD_NAME)(cfg, pooled_shape)
        )
        reg_heads = [first_reg_head] + [
            FastRCNNConvFCHead(cfg, pooled_shape) for _ in range(d.NUM_REG_STAGES - 1)
        ]
        first_reg_classes = 1 if cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG else num_classes
        reg_predictors = [
            _linear(head.output_shape, 4 * (first_reg_classes if k == 0 else 1), std=0.001)
            for k, head in enumerate(reg_heads)
        ]
        ret.update(
            {
                "box_predictor": _linear(box_head.output_shape, num_classes + 1, std=0.01),
                "reg_heads": reg_heads,
                "reg_predictors": reg_predictors,
                "reg_box2box_transforms": [
                    Box2BoxTransform(weights=w) for w in d.REG_STAGE_BBOX_REG_WEIGHTS
                ],
                "reg_batch_size_per_image": d.REG_BATCH_SIZE_PER_IMAGE,
                "reg_loss_weights": [d.REG_LOSS_LAMBDA * w for w in d.REG_STAGE_LOSS_WEIGHTS],
                "smooth_l1_beta": 0.0 if d.REG_LOSS_TYPE == "l1" else d.SMOOTH_L1_BETA,
                "reg_loss_normalizer": d.REG_LOSS_NORMALIZER,
                "reg_loss_normalizer_per_image": d.REG_LOSS_NORMALIZER_PER_IMAGE,
                "reg_proposal_append_gt": d.REG_PROPOSAL_APPEND_GT,
                "reg_pooler": reg_pooler,
                "test_stage": d.TEST_STAGE or d.NUM_REG_STAGES,
                "test_class_boxes": d.TEST_CLASS_BOXES,
                "fast_path": d.FAST_PATH,
                "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            }
        )
        return ret

    @property
    def num_reg_stages(self) -> int:
        return len(self.reg_heads)

    def forward(self, images, features, proposals, targets=None):
        """
        See :meth:`ROIHeads.forward`. In training ``proposals`` are the packed two sets of
        :class:`DecoupledRPN`; the returned proposals are the sampled classification RoIs.
        """
        del images
        if not self.training:
            pred_instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        assert targets, "'targets' argument is required during training"
        cls_proposals, reg_proposals = split_decoupled_proposals(proposals)
        cls_proposals = self.label_and_sample_proposals(cls_proposals, targets)
        if self.reg_proposal_append_gt:
            reg_proposals = add_ground_truth_to_proposals(targets, reg_proposals)
        box_features = [features[f] for f in self.box_in_features]
        losses = self._classification_loss(box_features, cls_proposals)
        losses.update(self._regression_losses(box_features, reg_proposals, targets))
        losses.update(self._forward_mask(features, cls_proposals))
        losses.update(self._forward_keypoint(features, cls_proposals))
        return cls_proposals, losses

    def _classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(R, C, P, P) pooled features -> (R, K + 1) class logits."""
        return self.box_predictor(torch.flatten(self.box_head(pooled), 1))

    def _regress(
        self, pooled: torch.Tensor, stage: int, classes: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Args:
            pooled (Tensor): (R, C, P, P) features of the RoIs.
            stage (int): 0-based regression stage.
            classes (Tensor or None): (R,) class in [0, K) whose deltas a class-specific stage
                returns; None: the deltas of every class.

        Returns:
            Tensor: (R, 4) deltas, or (R, 4K) for a class-specific stage and ``classes`` None.
        """
        deltas = self.reg_predictors[stage](torch.flatten(self.reg_heads[stage](pooled), 1))
        return deltas if classes is None else select_class_boxes(deltas, classes)

    def _stage_pooler(self, stage: int) -> ROIPooler:
        """The pooler of 0-based regression stage ``stage``."""
        return self.reg_pooler if stage == 0 and self.reg_pooler is not None else self.box_pooler

    def _refine(
        self, proposals: List[Instances], deltas: torch.Tensor, stage: int
    ) -> List[Instances]:
        """
        Applies stage ``stage``'s (R, 4) deltas to the R proposal boxes of the batch.

        Returns:
            list[Instances]: per image, the regressed boxes clipped to the image, as the field
            "proposal_boxes" of the next stage.
        """
        boxes = cat([p.proposal_boxes.tensor for p in proposals])
        boxes = self.reg_box2box_transforms[stage].apply_deltas(deltas, boxes)
        refined = []
        for p, boxes_i in zip(proposals, boxes.split([len(p) for p in proposals])):
            boxes_i = Boxes(boxes_i)
            boxes_i.clip(p.image_size)
            refined.append(Instances(p.image_size, proposal_boxes=boxes_i))
        return refined

    def regress_stages(
        self,
        features: List[torch.Tensor],
        proposals: List[Instances],
        pooled: torch.Tensor,
        classes: torch.Tensor,
    ) -> List[Instances]:
        """
        Inference refinement ("argmax" boxes): stages 1..``test_stage`` in order, stage 1 with
        the deltas of ``classes``, each later stage on the previous stage's boxes.

        Args:
            features (list[Tensor]): the pooler's feature maps.
            proposals (list[Instances]): per image, boxes as "proposal_boxes" (R in all).
            pooled (Tensor): (R, C, P, P) ``box_pooler`` features of those boxes, used by stage 1
                unless it has its own ``reg_pooler``.
            classes (Tensor): (R,) class in [0, K) of each box.

        Returns:
            list[Instances]: per image, the refined boxes as "proposal_boxes".
        """
        for stage in range(self.test_stage):
            if stage > 0 or self.reg_pooler is not None:
                pooled = self._stage_pooler(stage)(features, [p.proposal_boxes for p in proposals])
            proposals = self._refine(proposals, self._regress(pooled, stage, classes), stage)
        return proposals

    def named_box_heads(self) -> Dict[str, nn.Module]:
        """The classifier's trunk and every regression stage's (see detcommon.heads)."""
        stages = {f"regressor_stage{k + 1}": head for k, head in enumerate(self.reg_heads)}
        return {"classifier": self.box_head, **stages}

    def predict_per_head(
        self, features: List[torch.Tensor], proposals: List[Instances], classes: torch.Tensor
    ) -> Dict[str, HeadOutput]:
        """
        "classifier": the probability of `classes` (R,) for one image's proposals; "regressor":
        the boxes of stage ``test_stage`` after every earlier stage, with the deltas of `classes`
        (see detcommon.heads).
        """
        pooled = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        probs = F.softmax(self._classify(pooled), dim=-1)
        refined = self.regress_stages(features, proposals, pooled, classes)
        return {
            "classifier": HeadOutput(class_probability(probs, classes), None),
            "regressor": HeadOutput(None, refined[0].proposal_boxes.tensor),
        }

    def disable_fast_paths(self):
        """Regress every proposal at inference, not only those a score lets through."""
        self.fast_path = False

    def _predict_boxes(
        self,
        features: List[torch.Tensor],
        proposals: List[Instances],
        pooled: torch.Tensor,
        scores: torch.Tensor,
    ) -> List[torch.Tensor]:
        """
        Test boxes as ``test_class_boxes`` says.

        Args:
            features (list[Tensor]): as in :meth:`regress_stages`.
            proposals (list[Instances]): as in :meth:`regress_stages`.
            pooled (Tensor): as in :meth:`regress_stages`.
            scores (Tensor): (R, K + 1) classifier probabilities of the proposals.

        Returns:
            list[Tensor]: per image, (Ri, 4K) boxes of every class ("per_class"; (Ri, 4) for a
            class-agnostic stage 1), or (Ri, 4) boxes of the predicted class ("argmax").
        """
        if self.test_class_boxes == "argmax":
            refined = self.regress_stages(features, proposals, pooled, scores[:, :-1].argmax(1))
            return [p.proposal_boxes.tensor for p in refined]
        if self.reg_pooler is not None:
            pooled = self.reg_pooler(features, [p.proposal_boxes for p in proposals])
        boxes = self.reg_box2box_transforms[0].apply_deltas(
            self._regress(pooled, 0), cat([p.proposal_boxes.tensor for p in proposals])
        )
        return list(boxes.split([len(p) for p in proposals]))

    def _classification_loss(
        self, features: List[torch.Tensor], proposals: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Cross-entropy over the sampled classification RoIs (fields "gt_classes")."""
        logits = self._classify(self.box_pooler(features, [p.proposal_boxes for p in proposals]))
        gt_classes = cat([p.gt_classes for p in proposals])
        _log_classification_stats(logits, gt_classes)
        return {"loss_cls": cross_entropy(logits, gt_classes, reduction="mean")}

    def _regression_losses(
        self, features: List[torch.Tensor], proposals: List[Instances], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """
        Trains every regression stage on its own positive-only sample.

        Args:
            features (list[Tensor]): the pooler's feature maps.
            proposals (list[Instances]): per image, the regression proposals (with ground truth).
            targets (list[Instances]): per image, the ground truth.

        Returns:
            dict[str, Tensor]: "loss_box_reg_s{k}" for k = 1..S, weighted, normalised as
            ``reg_loss_normalizer`` says; exactly zero for a stage without any sampled RoI.
        """
        losses = {}
        for stage in range(self.num_reg_stages):
            proposals = sample_regression_proposals(
                proposals, targets, self.proposal_matcher, self.reg_batch_size_per_image, stage + 1
            )
            pooled = self._stage_pooler(stage)(features, [p.proposal_boxes for p in proposals])
            deltas = self._regress(pooled, stage, cat([p.gt_classes for p in proposals]))
            gt_deltas = self.reg_box2box_transforms[stage].get_deltas(
                cat([p.proposal_boxes.tensor for p in proposals]),
                cat([p.gt_boxes.tensor for p in proposals]),
            )
            # An empty sample sums to a zero that is still connected to the stage's parameters.
            loss = smooth_l1_loss(deltas, gt_deltas, self.smooth_l1_beta, reduction="sum")
            if self.reg_loss_normalizer == "fixed":
                normalizer = self.reg_loss_normalizer_per_image * len(proposals)
            else:
                normalizer = max(len(deltas), 1)
            losses[f"loss_box_reg_s{stage + 1}"] = loss / normalizer * self.reg_loss_weights[stage]
            if stage + 1 < self.num_reg_stages:
                # The next stage trains on these boxes, as fixed proposals (no gradient).
                proposals = self._refine(proposals, deltas.detach(), stage)
        return losses

    def _forward_box(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ) -> List[Instances]:
        """
        Inference on the RPN proposals (fields "proposal_boxes").

        Returns:
            list[Instances]: per image, the detections ("pred_boxes", "scores", "pred_classes").
        """
        features = [features[f] for f in self.box_in_features]
        pooled = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        scores = F.softmax(self._classify(pooled), dim=-1)
        if self.fast_path:
            # fast_rcnn_inference keeps scores > test_score_thresh: the others need no box.
            keep = scores[:, :-1].max(dim=1).values >= self.test_score_thresh
            keep_per_image = keep.split([len(p) for p in proposals])
            proposals = [p[k] for p, k in zip(proposals, keep_per_image)]
            scores, pooled = scores[keep], pooled[keep]
        pred_instances, _ = fast_rcnn_inference(
            self._predict_boxes(features, proposals, pooled, scores),
            scores.split([len(p) for p in proposals]),
            [p.image_size for p in proposals],
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )
        return pred_instances


def _linear(input_shape: ShapeSpec, out_features: int, std: float) -> nn.Linear:
    """A linear output layer on a trunk's flattened features, initialised as in Fast R-CNN."""
    in_features = input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1)
    layer = nn.Linear(in_features, out_features)
    nn.init.normal_(layer.weight, std=std)
    nn.init.constant_(layer.bias, 0)
    return layer
