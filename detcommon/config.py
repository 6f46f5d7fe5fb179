"""Config keys shared by every model of the project."""
__all__ = ["add_common_config"]


def add_common_config(cfg):
    """Declares the project-wide keys on a Detectron2 config, in place."""
    # User datasets in COCO detection format, registered before training or evaluation:
    # a list of [NAME, JSON_FILE, IMAGE_DIR]; `train_net.py --dataset NAME JSON IMAGE_DIR` appends.
    cfg.DATASETS.REGISTER_COCO = []
    # Where the embedded shapes dataset is cached; "" = $SHAPES_DATASET_DIR or ~/.cache/...
    cfg.DATASETS.SHAPES_ROOT = ""
    # Training skips images that cannot be read (missing, truncated, not an image) with a
    # warning that counts them, instead of stopping with an error naming the file.
    # Evaluation always stops: a skipped image would change the AP.
    cfg.DATALOADER.SKIP_BAD_IMAGES = False
    # Keep model_best.pth, the best periodic evaluation by this result, e.g. "bbox/AP75"; "" = off.
    cfg.TEST.BEST_CHECKPOINT_METRIC = ""
    # "max" keeps the highest value of TEST.BEST_CHECKPOINT_METRIC (AP), "min" the lowest.
    cfg.TEST.BEST_CHECKPOINT_MODE = "max"
