# Decoupled R-CNN with cascaded regression, R-50 FPN, 2x: the authors' released cascade config
# (decoupled_refine_rcnn_r50_fpn_2x_coco.py). The paper's COCO val table is 1x (40.1 AP); it
# reports no R-50 2x number that we could cite here. Twin of configs/drcnn_cascade_R50_FPN_2x.yaml.
from .drcnn_cascade_R50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

# MMDetection 2.4's 2x (schedule_2x.py): 24 epochs of about 7330 iterations at 16 images,
# lr x 0.1 after epochs 16 and 22.
lr_multiplier.steps = (117280, 161260)
train.max_iter = 175920
train.output_dir = "output/drcnn_cascade_R50_FPN_2x"
