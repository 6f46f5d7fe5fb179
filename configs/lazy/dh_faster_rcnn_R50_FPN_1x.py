# The Double-Head paper's FPN baseline, R-50 FPN, 1x: 36.8 AP / 58.7 AP50 / 40.4 AP75 on COCO 2017
# val (R-101: 39.1 AP, with train.init_checkpoint="detectron2://ImageNetPretrained/MSRA/R-101.pkl"
# model.backbone.bottom_up.stages.depth=101). Detectron2's StandardROIHeads (one 2-fc head
# classifying and regressing) under the same solver as the Double-Head configs
# (common/base_double_head.py). Twin of configs/dh_faster_rcnn_R50_FPN_1x.yaml.
from .common.base_double_head import dataloader, lr_multiplier, model, optimizer, train

train.output_dir = "output/dh_faster_rcnn_R50_FPN_1x"
