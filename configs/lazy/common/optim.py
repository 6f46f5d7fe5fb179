"""SGD as the YAML path's detectron2.solver.build_optimizer makes it, on Detectron2's defaults:
lr 0.02 for every parameter (SOLVER.BASE_LR), momentum 0.9, weight decay 1e-4, none on
normalization layers (WEIGHT_DECAY_NORM 0), bias lr x1 (BIAS_LR_FACTOR) with the weight decay
of the others (WEIGHT_DECAY_BIAS None). train_net.py sets params.model to the model."""

import torch
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        bias_lr_factor=1.0,
        weight_decay_bias=None,
    ),
    lr=0.02,
    momentum=0.9,
    nesterov=False,
    weight_decay=1e-4,
    foreach=True,
)
