"""tools/demo.py on a video: every frame drawn into <name>.mp4, with a progress bar."""

import cv2
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from tests.conftest import TINY_OPTS, project_cfg, write_video
from tools.demo import main as demo_main

CONFIG = "configs/shapes/dh_ext.yaml"
SIZE = (160, 128)  # width, height


def test_demo_draws_every_frame_of_a_video(tmp_path, capsys):
    cfg = project_cfg(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(tmp_path)).save("random")
    video = str(tmp_path / "clip.avi")
    write_video(video, num_frames=3)
    written = demo_main(
        [
            "--config-file",
            CONFIG,
            "--input",
            video,
            "--output",
            str(tmp_path / "out"),
            "--confidence-threshold",
            "0.0",
            "--opts",
            *TINY_OPTS,
            "MODEL.WEIGHTS",
            str(tmp_path / "random.pth"),
        ]
    )
    assert written == [str(tmp_path / "out" / "clip.mp4")]
    capture = cv2.VideoCapture(written[0])
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    assert len(frames) == 3 and all(f.shape == (SIZE[1], SIZE[0], 3) for f in frames)
    progress = capsys.readouterr().err
    assert "clip.avi: 100%" in progress and "3/3" in progress
