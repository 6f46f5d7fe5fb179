# Double-Head (vanilla) on the shapes dataset, on CPU. Same backbone, data and schedule as
# faster_rcnn.py; the head is the paper's (up-channel block + 2 x (non-local + bottleneck),
# fc cls + conv reg), its width scaled down with the 64-channel FPN: the paper's conv-head
# widens 256 input channels to 1024 (bottlenecks 256, non-local 512); here 64 -> 256 (64, 128),
# the same 4x widening. Twin of configs/shapes/dh.yaml.
from ..common.models.double_head import to_double_head
from .faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

to_double_head(model)
model.roi_heads.box_predictors.fc.loss_weight.lambda_fc = 1.0
model.roi_heads.box_predictors.conv.loss_weight.lambda_conv = 1.0
model.roi_heads.test_mode = "double"
model.roi_heads.box_heads.conv.update(conv_dim=256, bottleneck_dim=64, nonlocal_dim=128)
train.output_dir = "output/shapes/dh"
