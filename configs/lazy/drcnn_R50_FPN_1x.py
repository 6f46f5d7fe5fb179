# Decoupled R-CNN (Wang et al.), R-50 FPN, 1x, COCO 2017 val: the paper reports 38.6 AP and
# 13.8 AP90 (its FPN baseline: 37.4 AP, 11.1 AP90). Decoupled sampling (the RPN's NMS at 0.7 for
# classification, 0.85 for regression; 512 RoIs at 1:3 vs up to 512 positives), unshared 2-fc
# trunks, one class-specific L1 regressor (at test, every class its own box). Solver and test
# settings: the authors' (common/base_decoupled_rcnn.py, 12 epochs at 16 images).
# Twin of configs/drcnn_R50_FPN_1x.yaml.
from .common.base_decoupled_rcnn import dataloader, lr_multiplier, model, optimizer, train
from .common.models.decoupled_rcnn import to_decoupled_rcnn

to_decoupled_rcnn(model)
model.proposal_generator.nms_thresh = 0.7  # Proposals_cls
model.proposal_generator.smooth_l1_beta = 0.0  # L1 loss for the RPN too, as the authors
model.roi_heads.batch_size_per_image = 512
model.roi_heads.positive_fraction = 0.25
model.roi_heads.proposal_matcher.thresholds = [
    0.5
]  # positives for both tasks and every regression stage
model.proposal_generator.nms_thresh_reg = 0.85  # Proposals_reg
model.roi_heads.reg_batch_size_per_image = 512
model.roi_heads.reg_box2box_transforms[0].weights = (10.0, 10.0, 5.0, 5.0)  # one stage
model.roi_heads.reg_loss_weights.update(stage_loss_weights=[1.0], reg_loss_lambda=1.0)
model.roi_heads.smooth_l1_beta = 0.0  # REG_LOSS_TYPE "l1"
# Authors' decoupled_bbox_head.py: L1 sum over the positives / (512 classification + 512
# regression RoIs) per image, for every stage.
model.roi_heads.reg_loss_normalizer = "fixed"
model.roi_heads.reg_loss_normalizer_per_image = 1024
model.roi_heads.reg_proposal_append_gt = (
    False  # authors: ground truth joins the classification set only
)
train.output_dir = "output/drcnn_R50_FPN_1x"
