# Double-Head-Ext on the shapes dataset, on CPU: shapes/dh.py with the unfocused tasks trained
# (lambda_fc 0.7, lambda_conv 0.8) and complementary score fusion at test time.
# Twin of configs/shapes/dh_ext.yaml.
from .dh import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictors.fc.loss_weight.lambda_fc = 0.7
model.roi_heads.box_predictors.conv.loss_weight.lambda_conv = 0.8
model.roi_heads.test_mode = "fused"
model.roi_heads.fusion = "complementary"
train.output_dir = "output/shapes/dh_ext"
