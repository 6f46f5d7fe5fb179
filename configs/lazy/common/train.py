"""Run settings: Detectron2's configs/common/train.py layout with the YAML path's defaults (each
YAML key in the comment), plus the project's best checkpoint."""

train = dict(
    output_dir="./output",  # OUTPUT_DIR
    init_checkpoint="",  # MODEL.WEIGHTS
    max_iter=90000,  # SOLVER.MAX_ITER
    amp=dict(enabled=False),  # SOLVER.AMP.ENABLED
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(
        period=5000, max_to_keep=None
    ),  # SOLVER.CHECKPOINT_PERIOD; every checkpoint kept
    eval_period=0,  # TEST.EVAL_PERIOD; 0: evaluation after the last iteration only
    log_period=20,
    device="cuda",  # MODEL.DEVICE; train_net.py runs on "cpu" without CUDA
    seed=-1,  # SEED; < 0: random
    # TEST.BEST_CHECKPOINT_METRIC ("" = off, e.g. "bbox/AP75") and TEST.BEST_CHECKPOINT_MODE
    best_checkpoint=dict(metric="", mode="max"),
)
