# Decoupled R-CNN with Double-Head's conv-head as the regressor (Table XI), R-50 FPN, 1x,
# COCO 2017 val: the paper reports 40.0 AP (40.4 with cascaded regression). The regression trunk
# is an up-channel block and 4 bottlenecks, no non-local block; the classifier keeps its 2-fc
# trunk. Twin of configs/drcnn_dh_R50_FPN_1x.yaml.
from .common.models.double_head import conv_head
from .common.models.rcnn_fpn import enlarged_pooler
from .drcnn_R50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

# MODEL.DECOUPLED.REG_HEAD_NAME "DoubleHeadConvHead", sized by MODEL.DOUBLE_HEAD.CONV_HEAD
model.roi_heads.reg_heads[0] = conv_head(num_bottlenecks=4, num_nonlocal=0)
model.roi_heads.reg_predictors[0].input_shape.channels = "${model.roi_heads.reg_heads[0].conv_dim}"
model.roi_heads.reg_pooler = enlarged_pooler(
    1.3
)  # authors' Table XI uses 1.3x enlarged RoIs (reg_roi_scale_factor)
train.output_dir = "output/drcnn_dh_R50_FPN_1x"
