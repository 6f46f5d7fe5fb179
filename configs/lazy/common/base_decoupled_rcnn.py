# The Decoupled R-CNN authors' solver and test settings (shouwangzhe134/Decoupled-R-CNN, an
# MMDetection 2.4 fork) where they differ from Detectron2's defaults, on the project's R-50 FPN.
# Every Decoupled R-CNN COCO config extends this file, and so does this paper's FPN baseline
# (drcnn_faster_rcnn_R50_FPN_1x.py): all train on the same schedule. One COCO epoch =
# 117266 train2017 images (those with annotations) / 16 per batch = about 7330 iterations.
# Twin of configs/Base-DecoupledRCNN-R50-FPN.yaml.
from ..faster_rcnn_R50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

# Authors' R-50 COCO config (test_cfg.rcnn.score_thr); its NMS 0.5 and 100 detections per
# image are Detectron2's defaults (test_nms_thresh, test_topk_per_image).
model.roi_heads.box_predictor.test_score_thresh = 0.001

# MMDetection 2.4's schedule: lr 0.02 at 16 images (8 GPUs x 2). The authors' copy of it
# reads 0.01 at 2 images per GPU without naming the GPU count: 0.01 is the same rate for 8.
dataloader.train.total_batch_size = 16
optimizer.lr = 0.02
# MMDetection 2.4's 1x (schedule_1x.py): 12 epochs, lr x 0.1 after epochs 8 and 11.
lr_multiplier.steps = (58640, 80630)
train.max_iter = 87960
# Authors' schedule: linear warm-up over 500 iterations from 0.001 x lr (Detectron2: 1000
# iterations; its warmup_factor is already 0.001).
lr_multiplier.warmup_iters = 500
