"""detcommon.predictor.BatchPredictor: several images per forward, each with DefaultPredictor's
detections, for Double-Head-Ext and the Decoupled R-CNN cascade; `tools/demo.py --batch-size`."""

import contextlib
import logging
import os
import re

import cv2
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from detcommon.data.shapes import ensure_shapes
from detcommon.predictor import BatchPredictor
from tests.conftest import TINY_OPTS, project_cfg, write_video
from tools.demo import main as demo_main

NUM_IMAGES = 5  # of shapes_val, padded to different sizes at 128 px
DEMO_CONFIG = "configs/shapes/dh_ext.yaml"


def _cfg(config_file, opts=()):
    cfg = project_cfg(config_file)
    cfg.merge_from_list(
        [*TINY_OPTS, "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *opts]
    )
    return cfg


@pytest.mark.parametrize(
    "config_file, opts",
    [("configs/shapes/dh_ext.yaml", []), ("configs/shapes/drcnn_cascade.yaml", []),
     ("configs/shapes/dh_ext.yaml", ["INPUT.FORMAT", "RGB"])],
)  # fmt: skip
def test_batches_give_default_predictor_detections(config_file, opts):
    cfg = _cfg(config_file, opts)
    torch.manual_seed(0)
    single = DefaultPredictor(cfg)  # random weights: MODEL.WEIGHTS ""
    batched = BatchPredictor(cfg, batch_size=3)
    batched.model.load_state_dict(single.model.state_dict())
    forwards = []
    batched.model.register_forward_pre_hook(
        lambda model, args: forwards.append([x["image"].shape for x in args[0]])
    )
    images = [
        cv2.imread(os.path.join(ensure_shapes("shapes_val"), "images", f"{i:05d}.png"))
        for i in range(NUM_IMAGES)
    ]
    outputs = batched(images)
    assert sum(map(len, forwards)) == NUM_IMAGES and max(map(len, forwards)) > 1
    assert all(len(batch) <= 3 for batch in forwards)
    with pytest.raises(TypeError, match=r"pass \[image\] for one"):
        batched(images[0])
    for image, output in zip(images, outputs):
        expected, got = single(image)["instances"], output["instances"]
        assert got.image_size == expected.image_size == image.shape[:2]
        assert len(got) == len(expected) > 0
        assert torch.equal(got.pred_classes, expected.pred_classes)
        assert torch.allclose(got.scores, expected.scores, atol=1e-5)
        assert torch.allclose(got.pred_boxes.tensor, expected.pred_boxes.tensor, atol=1e-5)


def test_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        BatchPredictor(_cfg("configs/shapes/faster_rcnn.yaml"), batch_size=0)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A checkpoint of a randomly initialised Double-Head-Ext, for tools/demo.py."""
    cfg = _cfg(DEMO_CONFIG)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(build_model(cfg), str(out)).save("random")
    return str(out / "random.pth")


@contextlib.contextmanager
def _demo_log():
    """The messages tools/demo.py logs meanwhile."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("demo").addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger("demo").removeHandler(handler)


def _demo(inputs, output, batch_size, weights):
    with _demo_log() as records:
        written = demo_main(
            ["--config-file", DEMO_CONFIG, "--input", *inputs, "--output", output, "--confidence-threshold", "0.0",
             "--batch-size", str(batch_size), "--opts", *TINY_OPTS, "MODEL.WEIGHTS", weights]
        )  # fmt: skip
    return written, [r.getMessage() for r in records]


def test_demo_batch_size_draws_every_image_and_logs_images_per_second(tmp_path, random_weights):
    images = [os.path.join(ensure_shapes("shapes_val"), "images", f"{i:05d}.png") for i in range(4)]
    written, log = _demo(images, str(tmp_path), 3, random_weights)
    assert written == [str(tmp_path / os.path.basename(p)) for p in images]
    assert all(cv2.imread(p).shape == cv2.imread(q).shape for p, q in zip(written, images))
    assert (
        sum("ms per image (batch of 3)" in m for m in log) == 3
        and sum("(batch of 1)" in m for m in log) == 1
    )
    assert re.search(
        r"^4 images, [\d.]+ ms per image on average: [\d.]+ images per second \(batch size 3\)$",
        log[-1],
    )


def test_demo_batch_size_on_a_video_writes_every_frame(tmp_path, random_weights):
    video = str(tmp_path / "clip.avi")
    write_video(video, num_frames=3)  # batches of 2 frames and 1
    (written,), log = _demo([video], str(tmp_path / "out"), 2, random_weights)
    capture = cv2.VideoCapture(written)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert re.search(r"clip.avi: 3 frames, .* frames per second \(batch size 2\)", log[-1])


def test_demo_refuses_a_batch_size_below_one(capsys):
    with pytest.raises(SystemExit):
        demo_main(
            [
                "--config-file",
                DEMO_CONFIG,
                "--input",
                "x.png",
                "--output",
                "out",
                "--batch-size",
                "0",
            ]
        )
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err
