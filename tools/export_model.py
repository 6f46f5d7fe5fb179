#!/usr/bin/env python
"""Exports a trained model of this project (FPN baseline, Double-Head, Decoupled R-CNN) with
Detectron2's TracingAdapter to TorchScript (model.ts) and/or ONNX (model.onnx), then checks
the export against the eager model on a sample image and on a crop of it (fails beyond
1e-3 px).

    python tools/export_model.py --config-file configs/shapes/dh_ext.yaml --output export/ \
        --format torchscript onnx --opts MODEL.WEIGHTS output/shapes/dh_ext/model_final.pth

The exported graph takes one image, a float32 tensor (3, H, W) in INPUT.FORMAT channel order,
already resized as DefaultPredictor does (short side INPUT.MIN_SIZE_TEST, long side at most
INPUT.MAX_SIZE_TEST), and returns (boxes (N, 4) x0y0x1y1 in that image's pixels, scores (N,),
classes (N,)). export.json in the output directory records this contract.
"""

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import sys

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.export import TracingAdapter
from detectron2.export.torchscript_patch import patch_builtin_len
from detectron2.utils.logger import setup_logger

from detcommon.config import build_config
from detcommon.engine import setup_run
from detcommon.projects import package_names

FORMATS = ("torchscript", "onnx")
# Opset 16 is the first whose RoiAlign has the half-pixel mode of ROIAlignV2 (aligned=True).
ONNX_OPSET = 17
OUTPUT_NAMES = ("boxes", "scores", "classes")
MAX_BOX_DIFFERENCE = 1e-3  # pixels, between the export's boxes and the eager model's

logger = logging.getLogger("export_model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--output", required=True, help="directory for model.ts / model.onnx and export.json"
    )
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["torchscript"])
    parser.add_argument(
        "--sample-image", help="image to trace with (default: first image of DATASETS.TEST[0])"
    )
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ..."
    )
    return parser.parse_args(argv)


def model_input(predictor, image_bgr):
    """The tensor the exported model takes for an (H, W, 3) BGR image, as DefaultPredictor makes it."""
    image = image_bgr[:, :, ::-1] if predictor.input_format == "RGB" else image_bgr
    image = predictor.aug.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1)).to(
        predictor.cfg.MODEL.DEVICE
    )


def unscaled_detections(model, inputs):
    """GeneralizedRCNN inference without the resize back to the original image size."""
    instances = model.inference(inputs, do_postprocess=False)[0]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


@contextlib.contextmanager
def project_len_patched():
    """Detectron2's own fix for tracing, applied to this project's modules too: builtin len()
    turns a traced size into a constant, so the graph would only work for inputs with as many
    proposals as the sample; Tensor.__len__ keeps the size traced."""
    modules = [m for m in sys.modules if m.split(".")[0] in package_names()]
    with patch_builtin_len(modules):
        yield


def export(adapter, image, fmt, output_dir):
    """Writes model.ts or model.onnx of `adapter` traced on `image`; returns the file path."""
    if fmt == "torchscript":
        path = os.path.join(output_dir, "model.ts")
        with project_len_patched():
            torch.jit.save(torch.jit.trace(adapter, (image,)), path)
        return path
    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError(
            "ONNX export needs the onnx package: pip install onnx (and onnxruntime to check it)"
        )
    path = os.path.join(output_dir, "model.onnx")
    dynamic_axes = {
        "image": {1: "height", 2: "width"},
        **{name: {0: "detections"} for name in OUTPUT_NAMES},
    }
    try:
        with project_len_patched():
            # TorchScript-based exporter: it traces like TracingAdapter and maps RoIAlign and
            # NMS to ONNX RoiAlign and NonMaxSuppression through torchvision's symbolics.
            torch.onnx.export(
                adapter,
                (image,),
                path,
                opset_version=ONNX_OPSET,
                dynamo=False,
                input_names=["image"],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
            )
    except Exception as e:
        raise RuntimeError(
            f"ONNX export (opset {ONNX_OPSET}) failed: {e}. An op without an ONNX equivalent cannot be "
            "exported; the TorchScript export (--format torchscript) does not need one."
        ) from e
    return path


def load_exported(path):
    """A callable image tensor -> (boxes, scores, classes) numpy arrays, for model.ts or model.onnx."""
    if path.endswith(".ts"):
        module = torch.jit.load(path)
        return lambda image: [t.detach().cpu().numpy() for t in module(image)]
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image.cpu().numpy()})


def max_box_difference(model, exported, image):
    """Largest |box coordinate difference| between eager and exported detections on `image`,
    inf when they do not detect as many boxes or not the same classes."""
    with torch.no_grad():
        boxes, _, classes = (
            t.cpu().numpy() for t in unscaled_detections(model, [{"image": image}])
        )
    out_boxes, _, out_classes = exported(image)
    if out_boxes.shape != boxes.shape or not np.array_equal(out_classes, classes):
        return float("inf")
    return float(np.abs(out_boxes - boxes).max(initial=0.0))


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="export_model")
    cfg = build_config(args.config_file, [*args.opts, "OUTPUT_DIR", args.output])
    setup_run(cfg)
    if not cfg.MODEL.WEIGHTS:
        raise ValueError(
            "tools/export_model.py needs trained weights: --opts MODEL.WEIGHTS path/to/model_final.pth"
        )
    predictor = DefaultPredictor(cfg)
    if not (args.sample_image or cfg.DATASETS.TEST):
        raise ValueError(
            "Give --sample-image: DATASETS.TEST is empty, so there is no image to trace with"
        )
    sample = args.sample_image or DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    image_bgr = cv2.imread(sample)
    if image_bgr is None:
        raise ValueError(f"Cannot read sample image {sample!r}")
    image = model_input(predictor, image_bgr)
    # A second input of another size, with fewer proposals: the graph must not have kept the
    # sample's sizes as constants.
    crop = image[:, : image.shape[1] // 2, : image.shape[2] // 2].contiguous()
    adapter = TracingAdapter(predictor.model, [{"image": image}], unscaled_detections).eval()

    os.makedirs(args.output, exist_ok=True)
    results = {}
    for fmt in args.format:
        path = export(adapter, image, fmt, args.output)
        if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            logger.warning(
                f"Wrote {path}; not checked against the eager model (pip install onnxruntime)"
            )
            results[fmt] = {"path": path}
            continue
        exported = load_exported(path)
        diffs = [max_box_difference(predictor.model, exported, x) for x in (image, crop)]
        message = f"max |box difference| to the eager model: {diffs[0]:.3g} on {sample}, {diffs[1]:.3g} on a crop"
        if max(diffs) > MAX_BOX_DIFFERENCE:
            raise RuntimeError(f"The export {path} does not match the eager model: {message}")
        logger.info(f"Wrote {path}; {message}")
        results[fmt] = {"path": path, "max_box_difference": max(diffs)}
    contract = {
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "input": f"image: float32 (3, H, W), {cfg.INPUT.FORMAT}, 0-255, resized so the short side is "
        f"{cfg.INPUT.MIN_SIZE_TEST} and the long side at most {cfg.INPUT.MAX_SIZE_TEST}",
        "outputs": {
            "boxes": "(N, 4) x0, y0, x1, y1 in input pixels",
            "scores": "(N,)",
            "classes": "(N,) int64",
        },
        "classes": MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes")
        if cfg.DATASETS.TEST
        else None,
        "exports": results,
    }
    with open(os.path.join(args.output, "export.json"), "w") as f:
        json.dump(contract, f, indent=2)
    return results


if __name__ == "__main__":
    main()
