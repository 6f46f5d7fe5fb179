# The papers' FPN baseline on COCO 2017 (Double-Head Table 1: 36.8 AP with R-50).
# Schedule of both papers: 1x = 180k iterations at 8 images per batch (4 GPUs x 2), lr 0.01,
# steps at 120k and 160k, 800 px short side, horizontal flip only.
# Twin of configs/faster_rcnn_R50_FPN_1x.yaml; the common pieces are Base-RCNN-FPN.yaml's.
from .common.data.coco import dataloader
from .common.models.rcnn_fpn import model
from .common.optim import SGD as optimizer
from .common.schedule import lr_multiplier
from .common.train import train

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
model.backbone.bottom_up.stages.depth = 50

dataloader.train.total_batch_size = 8
optimizer.lr = 0.01
lr_multiplier.steps = (120000, 160000)
train.max_iter = 180000
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)
