# The Decoupled R-CNN paper's FPN baseline (R-50, COCO 2017 val: 37.4 AP, 11.1 AP90), on the
# authors' solver and test settings (common/base_decoupled_rcnn.py), the same as every
# drcnn_*.py: the baseline to compare them with. (faster_rcnn_R50_FPN_1x.py is the
# Double-Head paper's schedule: 180k iterations at 8 images.)
# Twin of configs/drcnn_faster_rcnn_R50_FPN_1x.yaml.
from .common.base_decoupled_rcnn import dataloader, lr_multiplier, model, optimizer, train

train.output_dir = "output/drcnn_faster_rcnn_R50_FPN_1x"
