# Double-Head-Ext, R-101 FPN, 1x: the paper reports 41.9 AP on COCO 2017 val (FPN baseline 39.1,
# Double-Head 41.5) and 42.3 AP on test-dev. Twin of configs/dh_ext_R101_FPN_1x.yaml.
from .dh_ext_R50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
model.backbone.bottom_up.stages.depth = 101
train.output_dir = "output/dh_ext_R101_FPN_1x"
