# Decoupled R-CNN with cascaded regression, R-101 FPN, 2x (the authors' schedule, see
# drcnn_cascade_R50_FPN_2x.py). The paper's R-101 results: 42.1 AP on COCO val (Decoupled
# R-CNN 40.6, FPN 39.4) and 43.3 AP on test-dev (45.3 multi-scale).
# Twin of configs/drcnn_cascade_R101_FPN_2x.yaml.
from .drcnn_cascade_R50_FPN_2x import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
model.backbone.bottom_up.stages.depth = 101
train.output_dir = "output/drcnn_cascade_R101_FPN_2x"
