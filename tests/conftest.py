"""Shared fixtures: an isolated shapes cache for the whole run and tiny-run config options."""
import os
import subprocess
import sys
import tempfile

import pytest

# Before anything imports detcommon: the suite never reads or writes the user's dataset cache.
os.environ.setdefault("SHAPES_DATASET_DIR", tempfile.mkdtemp(prefix="shapes-test-cache-"))
# Nor the pretrained backbone's cache: no test trains the real backbone (TINY_OPTS start from
# scratch; tests of detcommon.pretrain use tiny recipes).
os.environ.setdefault("SHAPES_PRETRAINED_DIR", tempfile.mkdtemp(prefix="pretrained-test-cache-"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Turns any shapes config into a seconds-long CPU run (tiny inputs, few RoIs, no workers).
TINY_OPTS = [
    "MODEL.WEIGHTS", "",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "4",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "192",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "TEST.DETECTIONS_PER_IMAGE", "20",
    "DATALOADER.NUM_WORKERS", "0",
]


# Narrows a Double-Head shapes config to a model that runs in milliseconds on the CPU.
TINY_DOUBLE_HEAD_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.DOUBLE_HEAD.CONV_HEAD.CONV_DIM", 32,
    "MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_DIM", 16,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
]


def tiny_double_head_cfg(config="configs/shapes/dh_ext.yaml", opts=()):
    """`config` with the project's keys, shrunk by TINY_DOUBLE_HEAD_OPTS, then `opts`."""
    from detectron2.config import get_cfg

    from detcommon import add_common_config
    from double_head import add_doublehead_config

    cfg = get_cfg()
    add_common_config(cfg)
    add_doublehead_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list([*TINY_DOUBLE_HEAD_OPTS, *opts])
    return cfg


@pytest.fixture(scope="session")
def tiny_val(tmp_path_factory):
    """`--dataset` arguments registering the first 5 images of shapes_val as "tiny_val" (odd: two
    ranks evaluate 3 and 2 images)."""
    import json

    from detcommon.shapes import ensure_shapes

    split = ensure_shapes("shapes_val")
    with open(os.path.join(split, "annotations.json")) as f:
        coco = json.load(f)
    images = coco["images"][:5]
    ids = {image["id"] for image in images}
    coco.update(images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    json_file = str(tmp_path_factory.mktemp("tiny_val") / "tiny_val.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return ["--dataset", "tiny_val", json_file, os.path.join(split, "images")]


@pytest.fixture(scope="session")
def shapes_root():
    return os.environ["SHAPES_DATASET_DIR"]


def run_train_net(*args, timeout=600):
    """Runs train_net.py in a subprocess; returns (returncode, combined output)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc.returncode, proc.stdout
