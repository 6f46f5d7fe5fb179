# Decoupled R-CNN with 3-stage cascaded regression on the embedded shapes dataset; same
# backbone, data and schedule as the FPN baseline (faster_rcnn.py).
# Twin of configs/shapes/drcnn_cascade.yaml.
from ..common.models.decoupled_rcnn import cascade_regression
from .drcnn import dataloader, lr_multiplier, model, optimizer, train

cascade_regression(
    model,
    bbox_reg_weights=[(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)],
    stage_loss_weights=[1.0, 0.5, 0.25],
)
# As the authors' code: no extra factor on top of the fixed divisor (drcnn.py), which gives
# Eq. 8's lambda 0.5 against a 128-RoI divisor (see MODEL.DECOUPLED.REG_LOSS_LAMBDA).
model.roi_heads.reg_loss_weights.reg_loss_lambda = 1.0
train.output_dir = "output/shapes/drcnn_cascade"
