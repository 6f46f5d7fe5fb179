# Double-Head-Ext, R-50 FPN, 1x: the paper reports 40.3 AP / 60.3 AP50 / 44.2 AP75 on COCO 2017
# val. Each head also learns its unfocused task (loss products: fc cls 1.4, fc reg 0.6,
# conv cls 0.5, conv reg 2.0); inference: conv boxes, scores of both classifiers fused (Eq. 4).
# Solver and RoIAlign sampling of the authors' code: common/base_double_head.py.
# Twin of configs/dh_ext_R50_FPN_1x.yaml.
from .common.base_double_head import dataloader, lr_multiplier, model, optimizer, train
from .common.models.double_head import to_double_head

to_double_head(model)
model.roi_heads.box_predictors.fc.loss_weight.update(loss_weight_fc=2.0, lambda_fc=0.7)
model.roi_heads.box_predictors.conv.loss_weight.update(loss_weight_conv=2.5, lambda_conv=0.8)
model.roi_heads.test_mode = "fused"
model.roi_heads.fusion = "complementary"
train.output_dir = "output/dh_ext_R50_FPN_1x"
