# Double-Head (vanilla), R-50 FPN, 1x: the paper reports 39.8 AP / 59.6 AP50 / 43.6 AP75 on
# COCO 2017 val (FPN baseline 36.8). fc-head: classification only; conv-head (up-channel block +
# 2 x (non-local + bottleneck)): box regression only; inference: fc scores + conv boxes.
# Solver and RoIAlign sampling of the authors' code: common/base_double_head.py.
# Twin of configs/dh_R50_FPN_1x.yaml.
from .common.base_double_head import dataloader, lr_multiplier, model, optimizer, train
from .common.models.double_head import to_double_head

to_double_head(model)
# lambda_fc 1.0: no fc box-regression loss; lambda_conv 1.0: no conv classification loss
model.roi_heads.box_predictors.fc.loss_weight.update(loss_weight_fc=2.0, lambda_fc=1.0)
model.roi_heads.box_predictors.conv.loss_weight.update(loss_weight_conv=2.5, lambda_conv=1.0)
model.roi_heads.test_mode = "double"
train.output_dir = "output/dh_R50_FPN_1x"
