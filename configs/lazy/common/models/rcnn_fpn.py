"""Faster R-CNN, R-50 FPN: Base-RCNN-FPN.yaml's model with Detectron2's defaults (MASK_ON False,
80 COCO classes), every argument as the YAML path's from_config passes it.

Derived sizes are interpolations, as the YAML path derives them: the RPN head and the RoI heads
take the FPN's channels ("${model.backbone.out_channels}", MODEL.FPN.OUT_CHANNELS), every
predictor the RoI heads' number of classes ("${model.roi_heads.num_classes}").
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardROIHeads

from detcommon.poolers import EnlargedROIPooler

model = L(GeneralizedRCNN)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(
                in_channels=3, out_channels=64, norm="FrozenBN"
            ),  # MODEL.RESNETS.NORM
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,  # MODEL.BACKBONE.FREEZE_AT: stem and res2 frozen
        ),
        in_features="${model.backbone.bottom_up.out_features}",  # MODEL.FPN.IN_FEATURES
        out_channels=256,
        norm="",
        top_block=L(LastLevelMaxPool)(),  # p6
        fuse_type="sum",
    ),
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4", "p5", "p6"],
        head=L(StandardRPNHead)(
            in_channels="${model.backbone.out_channels}", num_anchors=3, conv_dims=[-1]
        ),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[32], [64], [128], [256], [512]],  # one size per FPN level
            aspect_ratios=[[0.5, 1.0, 2.0]],  # three aspect ratios on every level
            strides=[4, 8, 16, 32, 64],
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        ),
        box2box_transform=L(Box2BoxTransform)(weights=(1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_topk=(2000, 1000),  # per FPN level, (train, test)
        post_nms_topk=(1000, 1000),
        nms_thresh=0.7,
        min_box_size=0.0,
        anchor_boundary_thresh=-1,
        loss_weight=1.0,
        box_reg_loss_type="smooth_l1",
        smooth_l1_beta=0.0,
    ),
    roi_heads=L(StandardROIHeads)(
        num_classes=80,
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        ),
        proposal_append_gt=True,
        box_in_features=["p2", "p3", "p4", "p5"],
        box_pooler=L(ROIPooler)(
            output_size=7,  # MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
            scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(
                channels="${model.backbone.out_channels}",
                height="${model.roi_heads.box_pooler.output_size}",
                width="${model.roi_heads.box_pooler.output_size}",
            ),
            conv_dims=[],
            fc_dims=[1024, 1024],  # MODEL.ROI_BOX_HEAD.NUM_FC x FC_DIM
            conv_norm="",
        ),
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=1024),  # the box head's last fc
            box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
            num_classes="${model.roi_heads.num_classes}",
            cls_agnostic_bbox_reg=False,
            smooth_l1_beta=0.0,
            box_reg_loss_type="smooth_l1",
            test_score_thresh=0.05,  # MODEL.ROI_HEADS.SCORE_THRESH_TEST
            test_nms_thresh=0.5,  # MODEL.ROI_HEADS.NMS_THRESH_TEST
            test_topk_per_image=100,  # TEST.DETECTIONS_PER_IMAGE
            loss_weight={
                "loss_box_reg": 1.0
            },  # MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT (loss_cls: 1)
        ),
        train_on_pred_boxes=False,
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
    vis_period=0,
)


def enlarged_pooler(scale):
    """An EnlargedROIPooler with model.roi_heads.box_pooler's arguments, pooling boxes enlarged
    by `scale` (a number or an interpolation) on the FPN level of the original box."""
    pooler = "${model.roi_heads.box_pooler."
    return L(EnlargedROIPooler)(
        output_size=pooler + "output_size}",
        scales=pooler + "scales}",
        sampling_ratio=pooler + "sampling_ratio}",
        pooler_type=pooler + "pooler_type}",
        scale=scale,
    )
