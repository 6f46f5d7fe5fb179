# The Double-Head authors' training setup (wuyuebupt/doubleheadsrcnn, a maskrcnn-benchmark fork)
# where it differs from Detectron2's defaults. Every COCO config of that paper extends this file,
# its FPN baseline (dh_faster_rcnn_R50_FPN_1x.py) included, so that all of them compare.
# Differences that remain: projects/DoubleHead/README.md, "Differences from the authors' code".
# Twin of configs/Base-DoubleHead-R50-FPN-1x.yaml.
from ..faster_rcnn_R50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

# configs/double_heads/e2e_faster_rcnn_R_50_FPN_1x_neighbor_bs8.yaml (Detectron2: 0, adaptive)
model.roi_heads.box_pooler.sampling_ratio = 2

# 1x: e2e_faster_rcnn_R_50_FPN_1x_neighbor_bs8.yaml and cmd_train.sh --lr-steps 120000 160000
# 180000 (4 GPUs x 2 images); the same values as faster_rcnn_R50_FPN_1x.py, restated here.
dataloader.train.total_batch_size = 8
optimizer.lr = 0.01
lr_multiplier.steps = (120000, 160000)
train.max_iter = 180000
# maskrcnn-benchmark's config/defaults.py: linear warm-up over 500 iterations from 1/3 of the
# lr (Detectron2: 1000 iterations from 0.001).
lr_multiplier.warmup_iters = 500
lr_multiplier.warmup_factor = 0.3333333333333333
# maskrcnn-benchmark's config/defaults.py and solver/build.py: every parameter named "bias"
# gets twice the lr and no weight decay (Detectron2: 1.0 and WEIGHT_DECAY)...
optimizer.params.bias_lr_factor = 2.0
optimizer.params.weight_decay_bias = 0.0
# ...and every other parameter, the conv-head's BN scales included, weight decay 0.0001
# (Detectron2: no weight decay on normalization layers).
optimizer.weight_decay = 0.0001
optimizer.params.weight_decay_norm = 0.0001
