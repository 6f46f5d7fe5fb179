"""Backbone weights for the shapes configs, pretrained once and cached like the dataset.

The papers start every detector from an ImageNet-pretrained ResNet. Nothing can be downloaded
here, so the project makes its own "ImageNet": object-centred crops (and background crops) of a
separate generated split, `shapes_pretrain` (its own seed; no image of shapes_train or
shapes_val), classified into the 5 shapes + background by the shapes configs' ResNet-18-GN.
The trained ResNet is saved with Detectron2's parameter names under `backbone.bottom_up.`, so
``MODEL.WEIGHTS: "shapes-pretrained://R-18-GN"`` loads it into any FPN model of the project,
exactly as ``detectron2://ImageNetPretrained/...`` loads ImageNet weights; FPN, RPN and heads
start from scratch.

The weights are made on first use (about 10 minutes on 2 CPU cores) into
`$SHAPES_PRETRAINED_DIR`, by default `~/.cache/detectron2_doublehead/pretrained`
(`$XDG_CACHE_HOME` is honoured), with a manifest that holds the recipe, the SHA-256 of the file
and the machine that made it; a file that is missing, corrupt or made by another recipe is
retrained. The bytes are repeatable on one machine with one thread count, not across machines
(`fingerprint` tells in seconds whether two machines make the same weights).

Shape shorthand: N = crops, S = crop side (px).
"""

import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler
from torch import nn
from torch.nn import functional as F

from .data.shapes import SHAPES_CLASSES, ShapesSpec, read_manifest, render_image, sha256_file

__all__ = [
    "PretrainRecipe",
    "RECIPES",
    "SCHEME",
    "default_pretrained_root",
    "ensure_pretrained",
    "fingerprint",
    "machine",
    "make_crops",
    "pretrain",
]

logger = logging.getLogger(__name__)

SCHEME = "shapes-pretrained://"
CACHE_ENV = "SHAPES_PRETRAINED_DIR"
RECIPE_VERSION = 1  # bump whenever the crop or training code changes what is produced


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines the pretrained weights. Equal recipes give equal weights."""

    # The ResNet, as MODEL.RESNETS of configs/shapes/faster_rcnn.yaml
    depth: int = 18
    norm: str = "GN"
    res2_out_channels: int = 64
    stride_in_1x1: bool = False
    # Crops of the shapes_pretrain split (seed 2: shapes_train is 0, shapes_val 1)
    num_images: int = 1500
    data_seed: int = 2
    crop_size: int = 64
    background_per_image: int = 3
    # SGD with momentum 0.9, linear warm-up then cosine learning rate, weight decay 1e-4
    iters: int = 1500
    warmup_iters: int = 100
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0

    def to_dict(self):
        return {"version": RECIPE_VERSION, **asdict(self)}


# MODEL.WEIGHTS "shapes-pretrained://<name>" -> recipe
RECIPES = {"R-18-GN": PretrainRecipe()}

# Detectron2's default PIXEL_MEAN / PIXEL_STD (BGR), which every shapes config keeps.
_PIXEL_MEAN = (103.530, 116.280, 123.675)
_PIXEL_STD = (1.0, 1.0, 1.0)


def default_pretrained_root():
    """`$SHAPES_PRETRAINED_DIR`, else `$XDG_CACHE_HOME/detectron2_doublehead/pretrained`."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "detectron2_doublehead", "pretrained")


def _resnet(recipe: PretrainRecipe) -> nn.Module:
    """The shapes configs' bottom-up ResNet, all stages trainable, returning res5."""
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.NORM, r.RES2_OUT_CHANNELS = recipe.depth, recipe.norm, recipe.res2_out_channels
    r.STRIDE_IN_1X1, r.OUT_FEATURES = recipe.stride_in_1x1, ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


def _square(cx, cy, side, h, w):
    """Integer square window (x0, y0, x1, y1) of `side` about (cx, cy), inside the image."""
    side = int(max(4, min(side, h, w)))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, x0 + side, y0 + side


def make_crops(recipe: PretrainRecipe):
    """
    Renders the shapes_pretrain split and cuts its crops.

    Returns:
        images (N, 3, S, S) uint8 BGR, labels (N,) int64 in [0, 5] (5 = background).
    """
    spec = ShapesSpec(num_images=recipe.num_images, seed=recipe.data_seed)
    rng = np.random.default_rng([recipe.data_seed, RECIPE_VERSION])
    size = recipe.crop_size
    crops, labels = [], []
    for index in range(spec.num_images):
        img, anns = render_image(spec, index)
        h, w = img.shape[:2]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        windows = []
        for (x, y, bw, bh), ann in zip(boxes, anns):
            # the object with some context, jittered: the classifier must not rely on centring
            side = max(bw, bh) * rng.uniform(1.1, 1.8)
            cx = x + bw / 2 + rng.uniform(-0.15, 0.15) * side
            cy = y + bh / 2 + rng.uniform(-0.15, 0.15) * side
            windows.append((_square(cx, cy, side, h, w), ann["category_id"] - 1))
        for _ in range(recipe.background_per_image):
            for _attempt in range(10):
                side = math.exp(rng.uniform(math.log(12), math.log(0.5 * min(h, w))))
                win = _square(rng.uniform(0, w), rng.uniform(0, h), side, h, w)
                if not len(boxes) or _max_iou(win, boxes) < 0.2:
                    windows.append((win, len(SHAPES_CLASSES)))
                    break
        for (x0, y0, x1, y1), label in windows:
            crop = cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
            crops.append(crop.transpose(2, 0, 1))
            labels.append(label)
    return torch.from_numpy(np.stack(crops)), torch.tensor(labels, dtype=torch.int64)


def _max_iou(win, boxes_xywh):
    x0, y0, x1, y1 = win
    bx0, by0 = boxes_xywh[:, 0], boxes_xywh[:, 1]
    bx1, by1 = bx0 + boxes_xywh[:, 2], by0 + boxes_xywh[:, 3]
    iw = np.clip(np.minimum(x1, bx1) - np.maximum(x0, bx0), 0, None)
    ih = np.clip(np.minimum(y1, by1) - np.maximum(y0, by0), 0, None)
    inter = iw * ih
    union = (x1 - x0) * (y1 - y0) + boxes_xywh[:, 2] * boxes_xywh[:, 3] - inter
    return float((inter / union).max())


def pretrain(recipe: PretrainRecipe, log_period: int = 100):
    """
    Trains the ResNet of `recipe` on its crops (horizontal flips; 10% of the crops held out).

    Returns:
        (state_dict of the ResNet, {"train_accuracy": ..., "heldout_accuracy": ...}).
    """
    torch.manual_seed(recipe.seed)
    images, labels = make_crops(recipe)
    perm = torch.randperm(len(labels))
    num_heldout = len(labels) // 10
    heldout, train = perm[:num_heldout], perm[num_heldout:]
    mean = torch.tensor(_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_PIXEL_STD).view(1, 3, 1, 1)

    resnet = _resnet(recipe)
    classifier = nn.Linear(resnet.output_shape()["res5"].channels, len(SHAPES_CLASSES) + 1)
    model = nn.ModuleDict({"resnet": resnet, "classifier": classifier})
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        momentum=0.9,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: (
            min(1.0, (it + 1) / recipe.warmup_iters)
            * 0.5
            * (1 + math.cos(math.pi * it / recipe.iters))
        ),
    )

    def logits(batch):
        x = (batch.float() - mean) / std
        return classifier(resnet(x)["res5"].mean(dim=(2, 3)))

    model.train()
    start, correct, seen = time.perf_counter(), 0, 0
    for it in range(recipe.iters):
        idx = train[torch.randint(len(train), (recipe.batch_size,))]
        batch, target = images[idx], labels[idx]
        flip = torch.rand(len(batch)) < 0.5
        batch[flip] = batch[flip].flip(-1)
        out = logits(batch)
        loss = F.cross_entropy(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        correct += int((out.argmax(1) == target).sum())
        seen += len(target)
        if (it + 1) % log_period == 0 or it + 1 == recipe.iters:
            elapsed = time.perf_counter() - start
            logger.info(
                f"pretrain iter {it + 1}/{recipe.iters}: loss {loss.item():.3f}, "
                f"train accuracy {correct / seen:.3f}, {elapsed / (it + 1):.2f} s/iter, "
                f"eta {elapsed / (it + 1) * (recipe.iters - it - 1) / 60:.1f} min"
            )
            correct = seen = 0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([logits(images[i]).argmax(1) for i in heldout.split(256)])
    accuracy = float((pred == labels[heldout]).float().mean())
    logger.info(f"pretrain: held-out accuracy {accuracy:.3f} on {num_heldout} crops")
    return resnet.state_dict(), {"heldout_accuracy": accuracy, "num_crops": len(labels)}


def machine() -> dict:
    """What, besides the recipe, decides the bytes of `pretrain`'s weights: the CPU (its
    instruction set picks the float kernels), PyTorch's CPU capability and thread count (the
    order of float sums), and the PyTorch version."""
    cpu = platform.processor()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset"),
        "torch": torch.__version__,
    }


def fingerprint(recipe: PretrainRecipe, iters: int = 10, num_images: int = 60) -> dict:
    """
    A quick stand-in for the weights `recipe` makes on this machine: the SHA-256 of the ResNet
    after the first `iters` iterations on the crops of `num_images` images (batch 32; seconds,
    not minutes). Machines whose fingerprints differ make different weights from `recipe` (their first
    iterations already differ); an equal fingerprint is necessary for equal weights, not proof.

    Returns:
        {"sha256": ..., "iters": ..., **machine()}.
    """
    short = replace(
        recipe, num_images=num_images, iters=iters, warmup_iters=min(2, iters), batch_size=32
    )
    state, _ = pretrain(short, log_period=iters + 1)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": digest.hexdigest(), "iters": iters, **machine()}


def _verify(path, manifest_path, recipe):
    """None if `path` holds the weights of `recipe`, else why not."""
    manifest, problem = read_manifest(manifest_path)
    if not os.path.isfile(path) or problem == "missing":
        return "not made yet"
    if problem:
        return f"manifest {problem}"
    if manifest.get("recipe") != recipe.to_dict():
        return f"made with another recipe {manifest.get('recipe')}"
    if manifest.get("sha256") != sha256_file(path):
        return "checksum mismatch"
    return None


def ensure_pretrained(name: str, root: str = None, recipe: PretrainRecipe = None) -> str:
    """
    Makes sure the pretrained weights `name` (a key of RECIPES, or any name with `recipe`) are
    in the cache and intact, training them if not. Safe to call from several processes at once.

    Returns:
        the path of the weights file (a Detectron2 checkpoint: {"model": ..., "__author__": ...}).
    """
    if recipe is None:
        if name not in RECIPES:
            raise KeyError(
                f"Unknown pretrained weights {SCHEME}{name}: known are "
                f"{', '.join(SCHEME + k for k in RECIPES)}"
            )
        recipe = RECIPES[name]
    root = root or default_pretrained_root()
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"{name}.pth")
    manifest_path = os.path.join(root, f"{name}.json")
    with open(os.path.join(root, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = _verify(path, manifest_path, recipe)
        if problem is None:
            return path
        logger.warning(
            f"Pretrained weights {SCHEME}{name} at {path}: {problem}. Training them now "
            f"({recipe.iters} iterations on {recipe.num_images} generated images; once)."
        )
        start = time.perf_counter()
        state, stats = pretrain(recipe)
        checkpoint = {
            "model": {f"backbone.bottom_up.{k}": v for k, v in state.items()},
            "__author__": "detcommon.pretrain",
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=root)
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
        manifest = {
            "recipe": recipe.to_dict(),
            "sha256": sha256_file(path),
            "seconds": round(time.perf_counter() - start, 1),
            **stats,
            "made_on": machine(),
        }
        with open(manifest_path + ".tmp", "w") as f:
            json.dump(manifest, f, indent=1)
        os.replace(manifest_path + ".tmp", manifest_path)
        logger.info(f"Pretrained weights written to {path} in {manifest['seconds']:.0f} s")
        return path


class PretrainedHandler(PathHandler):
    """Resolves ``shapes-pretrained://<name>`` (MODEL.WEIGHTS) to the cached weights file."""

    def _get_supported_prefixes(self):
        return [SCHEME]

    def _get_local_path(self, path, **kwargs):
        return ensure_pretrained(path[len(SCHEME) :])

    def _open(self, path, mode="r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)

    def _isfile(self, path, **kwargs):
        return path[len(SCHEME) :] in RECIPES


PathManager.register_handler(PretrainedHandler())
