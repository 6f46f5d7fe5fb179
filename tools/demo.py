#!/usr/bin/env python
"""Runs a trained model on images with Detectron2's DefaultPredictor and saves them with the
predicted boxes drawn.

    python tools/demo.py --config-file configs/shapes/dh_ext.yaml --input img.png dir/ "imgs/*.jpg" \
        --output out/ --opts MODEL.WEIGHTS output/shapes/dh_ext/model_final.pth
"""
import argparse
import glob
import logging
import os
import sys
import time

import cv2
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_net import argument_parser, setup  # noqa: E402  (the same config handling as training)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(patterns):
    """Files, directories (their images, sorted) and glob patterns -> list of image paths."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += sorted(
                os.path.join(pattern, f) for f in os.listdir(pattern) if f.lower().endswith(IMAGE_EXTENSIONS)
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="images, directories or glob patterns")
    parser.add_argument("--output", required=True, help="directory for the drawn images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="draw boxes scoring at least this")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="demo")
    logger = logging.getLogger("demo")
    train_args = argument_parser().parse_args(
        ["--config-file", args.config_file, *args.opts,
         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.confidence_threshold),
         "OUTPUT_DIR", args.output]
    )
    cfg = setup(train_args)
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("tools/demo.py needs trained weights: --opts MODEL.WEIGHTS path/to/model_final.pth")
    predictor = DefaultPredictor(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    paths = expand_inputs(args.input)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in tqdm.tqdm(paths, desc="demo", disable=len(paths) < 2):
        image = cv2.imread(path)
        if image is None:
            raise ValueError(f"Cannot read image {path!r} (missing, truncated or not an image)")
        start = time.perf_counter()
        instances = predictor(image)["instances"].to("cpu")
        elapsed = time.perf_counter() - start
        visual = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE).draw_instance_predictions(
            instances
        )
        out_path = os.path.join(args.output, os.path.basename(path))
        cv2.imwrite(out_path, visual.get_image()[:, :, ::-1])
        logger.info(f"{path}: {len(instances)} detections in {elapsed * 1000:.1f} ms -> {out_path}")
        written.append(out_path)
    return written


if __name__ == "__main__":
    main()
