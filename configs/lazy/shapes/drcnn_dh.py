# Decoupled R-CNN with Double-Head's conv-head as the regressor (Table XI) on the embedded
# shapes dataset; same backbone, data and schedule as drcnn.py. The conv-head is sized like
# dh.py's (64 -> 256 channels, bottlenecks 64, non-local 128: the paper's 4x widening) with
# Table XI's structure: 4 bottlenecks, no non-local block. Twin of configs/shapes/drcnn_dh.yaml.
from ..common.models.double_head import conv_head
from ..common.models.rcnn_fpn import enlarged_pooler
from .drcnn import dataloader, lr_multiplier, model, optimizer, train

# MODEL.DECOUPLED.REG_HEAD_NAME "DoubleHeadConvHead", sized by MODEL.DOUBLE_HEAD.CONV_HEAD
model.roi_heads.reg_heads[0] = conv_head(
    conv_dim=256, bottleneck_dim=64, nonlocal_dim=128, num_bottlenecks=4, num_nonlocal=0
)
model.roi_heads.reg_predictors[0].input_shape.channels = "${model.roi_heads.reg_heads[0].conv_dim}"
model.roi_heads.reg_pooler = enlarged_pooler(1.3)  # authors' Table XI uses 1.3x enlarged RoIs
train.output_dir = "output/shapes/drcnn_dh"
