"""The learning-rate schedule of Base-RCNN-FPN.yaml and Detectron2's defaults (WarmupMultiStepLR):
lr x 0.1 at iterations 60k and 80k (SOLVER.STEPS, GAMMA), linear warm-up over 1000 iterations
(WARMUP_ITERS) from 0.001 x lr (WARMUP_FACTOR). Steps and warm-up are iterations, relative to
train.max_iter (SOLVER.MAX_ITER), as the YAML path's."""

from detectron2.config import LazyCall as L

from detcommon.engine.lazy import multistep_lr_multiplier

lr_multiplier = L(multistep_lr_multiplier)(
    steps=(60000, 80000),
    max_iter="${train.max_iter}",
    warmup_iters=1000,
    warmup_factor=0.001,
    warmup_method="linear",
    gamma=0.1,
)
