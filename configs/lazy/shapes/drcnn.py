# Decoupled R-CNN on the embedded shapes dataset, CPU-sized; same backbone, data and schedule
# as the FPN baseline (faster_rcnn.py) so the two compare fairly. Twin of configs/shapes/drcnn.yaml.
from ..common.models.decoupled_rcnn import to_decoupled_rcnn
from .faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

to_decoupled_rcnn(model)
model.proposal_generator.nms_thresh_reg = 0.85
# Regression cap = classification batch, as in the paper (512 / 512).
model.roi_heads.reg_batch_size_per_image = 128
model.roi_heads.reg_box2box_transforms[0].weights = (10.0, 10.0, 5.0, 5.0)  # one stage
model.roi_heads.reg_loss_weights.update(stage_loss_weights=[1.0], reg_loss_lambda=1.0)
model.roi_heads.smooth_l1_beta = 0.0  # REG_LOSS_TYPE "l1"
# The authors' fixed divisor is their padded sample, classification + regression RoIs per
# image (512 + 512 on COCO): 128 + 128 at this config's RoI batches.
model.roi_heads.reg_loss_normalizer = "fixed"
model.roi_heads.reg_loss_normalizer_per_image = 256
train.output_dir = "output/shapes/drcnn"
