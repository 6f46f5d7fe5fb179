#!/usr/bin/env python
"""Runs a trained model on images and videos with DefaultPredictor's preprocessing, --batch-size
images or frames per forward (detcommon.predictor.BatchPredictor), and saves them with the
predicted boxes drawn (a video becomes <name>.mp4 in the output directory); logs images per second.

    python tools/demo.py --config-file configs/shapes/dh_ext.yaml --input img.png dir/ "imgs/*.jpg" \
        clip.mp4 --output out/ --batch-size 4 --opts MODEL.WEIGHTS output/shapes/dh_ext/model_final.pth
"""

import argparse
import collections
import glob
import logging
import os
import time

import cv2
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

from detcommon.config import build_config
from detcommon.engine import check_weights_for_eval, setup_run
from detcommon.predictor import BatchPredictor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def expand_inputs(patterns):
    """Files, directories (their images and videos, sorted) and glob patterns -> list of paths."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += sorted(
                os.path.join(pattern, f)
                for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            )
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            matches = sorted(glob.glob(os.path.expanduser(pattern)))
            if not matches:
                raise FileNotFoundError(f"--input {pattern!r} matches no file or directory")
            paths += matches
    if not paths:
        raise FileNotFoundError(f"--input {patterns} holds no image")
    return paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input", nargs="+", required=True, help="images, videos, directories or glob patterns"
    )
    parser.add_argument("--output", required=True, help="directory for the drawn images and videos")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="draw boxes scoring at least this"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="images (or video frames) per forward; only images the "
        "model pads to the same size share one",
    )
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ..."
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="demo")
    logger = logging.getLogger("demo")
    cfg = build_config(
        args.config_file,
        [
            *args.opts,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            str(args.confidence_threshold),
            "OUTPUT_DIR",
            args.output,
        ],
    )
    setup_run(cfg)
    check_weights_for_eval(cfg.MODEL.WEIGHTS)
    predictor = BatchPredictor(cfg, args.batch_size)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    paths = expand_inputs(args.input)
    videos = [p for p in paths if p.lower().endswith(VIDEO_EXTENSIONS)]
    images = [p for p in paths if p not in videos]
    repeated = [n for n, k in collections.Counter(map(os.path.basename, paths)).items() if k > 1]
    if repeated:
        raise ValueError(
            f"--input holds several files named {repeated}: their outputs would overwrite each other"
        )
    os.makedirs(args.output, exist_ok=True)
    written, seconds = [], 0.0
    with tqdm.tqdm(total=len(images), desc="demo", disable=len(images) < 2) as bar:
        for start in range(0, len(images), args.batch_size):
            batch_paths = images[start : start + args.batch_size]
            batch = [read_image(path) for path in batch_paths]
            results, elapsed = predict(predictor, batch)
            seconds += elapsed
            for path, image, instances in zip(batch_paths, batch, results):
                out_path = os.path.join(args.output, os.path.basename(path))
                cv2.imwrite(out_path, draw(image, instances, metadata))
                logger.info(
                    f"{path}: {len(instances)} detections, {elapsed * 1000 / len(batch):.1f} ms per image "
                    f"(batch of {len(batch)}) -> {out_path}"
                )
                written.append(out_path)
            bar.update(len(batch))
    if images:
        logger.info(
            f"{len(images)} images, {1000 * seconds / len(images):.1f} ms per image on average: "
            f"{len(images) / seconds:.1f} images per second (batch size {args.batch_size})"
        )
    for path in videos:
        written.append(run_video(predictor, metadata, path, args.output, logger))
    return written


def read_image(path):
    """The BGR image at `path`; an error naming it when it cannot be read."""
    image = cv2.imread(path)
    if image is None:
        raise ValueError(f"Cannot read image {path!r} (missing, truncated or not an image)")
    return image


def predict(predictor, images):
    """([CPU instances of each image], seconds): one call of the predictor on a list of images."""
    start = time.perf_counter()
    results = [output["instances"].to("cpu") for output in predictor(images)]
    return results, time.perf_counter() - start


def draw(image, instances, metadata):
    """The BGR image with the predicted boxes drawn by Detectron2's Visualizer."""
    visual = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
    return visual.draw_instance_predictions(instances).get_image()[:, :, ::-1]


def read_frames(capture, num_frames):
    """The next (up to) num_frames frames of a cv2.VideoCapture; [] at the end."""
    frames = []
    while len(frames) < num_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return frames


def run_video(predictor, metadata, path, output_dir, logger):
    """Draws the detections on every frame of a video into <output_dir>/<name>.mp4, the
    predictor's batch_size frames per call, with a progress bar showing the inference time per
    frame; returns the written path."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"Cannot open video {path!r} (missing, truncated or an unsupported codec)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    if os.path.abspath(out_path) == os.path.abspath(path):
        raise ValueError(
            f"--output would overwrite the input video {path!r}: choose another directory"
        )
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"Cannot write {out_path!r}: this OpenCV build has no mp4v encoder")
    done, seconds = 0, 0.0
    with tqdm.tqdm(
        total=num_frames if num_frames > 0 else None, desc=os.path.basename(path), unit="frame"
    ) as bar:
        frames = read_frames(capture, predictor.batch_size)
        while frames:
            results, elapsed = predict(predictor, frames)
            for frame, instances in zip(frames, results):
                writer.write(draw(frame, instances, metadata))
            done, seconds = done + len(frames), seconds + elapsed
            bar.set_postfix(ms=f"{elapsed * 1000 / len(frames):.0f}")
            bar.update(len(frames))
            frames = read_frames(capture, predictor.batch_size)
    capture.release()
    writer.release()
    if not done:
        raise ValueError(f"Video {path!r} has no readable frame")
    logger.info(
        f"{path}: {done} frames, {1000 * seconds / done:.1f} ms per frame on average: "
        f"{done / seconds:.1f} frames per second (batch size {predictor.batch_size}) -> {out_path}"
    )
    return out_path


if __name__ == "__main__":
    main()
