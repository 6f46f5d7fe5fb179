"""The embedded "shapes" detection dataset: generated, cached, verified.

A seeded generator draws filled shapes of random colours on textured, noisy backgrounds and
writes a COCO-format detection set. Every image has its own random stream, so the set is the
same on every machine and in every process. The cache holds a manifest with the SHA-256 of
every file; a cache that is partial, corrupt or made with other parameters is regenerated.
"""

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import cv2
import numpy as np

__all__ = ["SHAPES_CLASSES", "ShapesSpec", "SPLITS", "default_cache_root", "ensure_shapes"]

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ["circle", "square", "triangle", "star", "hexagon"]
GENERATOR_VERSION = 1  # bump whenever the drawing code changes what is written
CACHE_ENV = "SHAPES_DATASET_DIR"


@dataclass(frozen=True)
class ShapesSpec:
    """What one split contains. Equal specs give byte-identical images and annotations."""

    num_images: int
    seed: int
    min_size: int = 256  # image sides are drawn from [min_size, max_size]
    max_size: int = 320
    max_objects: int = 10
    min_visible: float = 0.6  # an occluded shape keeps at least this fraction of its pixels

    def to_dict(self):
        return {"version": GENERATOR_VERSION, **asdict(self)}


SPLITS = {
    "shapes_train": ShapesSpec(num_images=600, seed=0),
    "shapes_val": ShapesSpec(num_images=120, seed=1),
}


def default_cache_root():
    """`$SHAPES_DATASET_DIR`, else `$XDG_CACHE_HOME/detectron2_doublehead/shapes` (~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "detectron2_doublehead", "shapes")


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------
def _polygon(kind, cx, cy, radius, angle):
    """Vertices (K, 2) of a regular polygon or star centred at (cx, cy)."""
    if kind == "square":
        n, radii = 4, [radius]
    elif kind == "triangle":
        n, radii = 3, [radius]
    elif kind == "hexagon":
        n, radii = 6, [radius]
    elif kind == "star":
        n, radii = 10, [radius, radius * 0.45]
    else:
        raise ValueError(kind)
    t = angle + np.arange(n) * 2 * math.pi / n
    r = np.array([radii[i % len(radii)] for i in range(n)])
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _draw_mask(kind, shape_hw, cx, cy, radius, angle):
    """Binary mask (H, W) of one shape."""
    mask = np.zeros(shape_hw, dtype=np.uint8)
    if kind == "circle":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(radius)), 1, -1, cv2.LINE_8)
    else:
        pts = np.round(_polygon(kind, cx, cy, radius, angle)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8)
    return mask.astype(bool)


def _background(rng, h, w):
    """A textured background: a colour gradient, blobs or stripes, and Gaussian noise."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    ramp = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    ramp = ramp[None, :, None] if ramp.shape[0] == w else ramp[:, None, None]
    img = np.broadcast_to(c0 + (c1 - c0) * ramp, (h, w, 3)).copy()
    if rng.random() < 0.5:  # stripes
        period = rng.uniform(6, 30)
        theta = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        img += wave[..., None] * rng.uniform(5, 25)
    else:  # soft blobs
        for _ in range(rng.integers(3, 9)):
            color = rng.uniform(0, 255, size=3)
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(10, w // 2)), int(rng.integers(10, h // 2)))
            layer = img.copy()
            cv2.ellipse(layer, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
            img = cv2.addWeighted(img, 0.7, layer, 0.3, 0)
    img += rng.normal(0, rng.uniform(4, 14), size=img.shape)
    return img


def _sample_radius(rng, h, w):
    """Log-uniform radius: from shapes well under 32x32 px in area up to about half the image."""
    return float(np.exp(rng.uniform(np.log(8), np.log(min(h, w) * 0.36))))


def render_image(spec, index):
    """Draws image `index` of a split. Returns (HxWx3 uint8 BGR image, list of annotations)."""
    rng = np.random.default_rng([spec.seed, index, GENERATOR_VERSION])
    h = int(rng.integers(spec.min_size, spec.max_size + 1))
    w = int(rng.integers(spec.min_size, spec.max_size + 1))
    img = _background(rng, h, w)
    owner = np.full((h, w), -1, dtype=np.int32)  # which object each pixel shows
    objects = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(20):
            kind_id = int(rng.integers(len(SHAPES_CLASSES)))
            radius = _sample_radius(rng, h, w)
            cx, cy = (
                rng.uniform(radius * 0.6, w - radius * 0.6),
                rng.uniform(radius * 0.6, h - radius * 0.6),
            )
            mask = _draw_mask(
                SHAPES_CLASSES[kind_id], (h, w), cx, cy, radius, rng.uniform(0, 2 * math.pi)
            )
            area = int(mask.sum())
            if area < 30:
                continue
            # Drawing on top must leave every earlier shape mostly visible: partial overlaps only.
            hidden = np.bincount(owner[mask][owner[mask] >= 0], minlength=len(objects))
            if any(
                hidden[i] > (1 - spec.min_visible) * objects[i]["visible"]
                for i in range(len(objects))
            ):
                continue
            for i in range(len(objects)):
                objects[i]["visible"] -= int(hidden[i])
            owner[mask] = len(objects)
            objects.append({"category_id": kind_id, "visible": area})
            color = rng.uniform(0, 255, size=3)
            shade = rng.normal(0, 6, size=(area, 3))
            img[mask] = color + shade
            break
    img = np.clip(img, 0, 255).astype(np.uint8)

    annotations = []
    for i, obj in enumerate(objects):
        ys, xs = np.nonzero(owner == i)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        annotations.append(
            {
                "category_id": obj["category_id"] + 1,  # COCO ids start at 1
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float(len(xs)),  # visible pixels, as COCO measures segment area
                "iscrowd": 0,
            }
        )
    return img, annotations


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_split(name, spec, out_dir):
    """Writes images/ and annotations.json of one split into out_dir; returns the manifest."""
    os.makedirs(os.path.join(out_dir, "images"))
    images, annotations = [], []
    for index in range(spec.num_images):
        img, anns = render_image(spec, index)
        file_name = f"{index:05d}.png"
        # PNG is lossless and its encoder deterministic: checksums are stable across machines.
        if not cv2.imwrite(os.path.join(out_dir, "images", file_name), img):
            raise OSError(f"Could not write {file_name} into {out_dir}")
        images.append(
            {"id": index + 1, "file_name": file_name, "height": img.shape[0], "width": img.shape[1]}
        )
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, **ann})
    coco = {
        "info": {
            "description": f"{name}: embedded synthetic shapes",
            "version": str(GENERATOR_VERSION),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES_CLASSES)
        ],
    }
    with open(os.path.join(out_dir, "annotations.json"), "w") as f:
        json.dump(coco, f)
    files = ["annotations.json"] + [os.path.join("images", im["file_name"]) for im in images]
    return {
        "spec": spec.to_dict(),
        "files": {p: sha256_file(os.path.join(out_dir, p)) for p in files},
    }


def read_manifest(path):
    """(the JSON manifest at `path`, None), or (None, why it cannot be used: "missing" or
    "unreadable (<error>)"). The manifests of the caches hold what a cached file was made from
    and its SHA-256."""
    if not os.path.isfile(path):
        return None, "missing"
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"unreadable ({e})"


def verify_split(split_dir, spec):
    """Returns None if split_dir holds exactly what `spec` generates, else the reason it does not."""
    manifest, problem = read_manifest(os.path.join(split_dir, "manifest.json"))
    if problem == "missing":
        return "no manifest.json (generation never finished)"
    if problem:
        return f"manifest.json {problem}"
    if manifest.get("spec") != spec.to_dict():
        return f"made with other parameters {manifest.get('spec')}"
    files = manifest.get("files", {})
    if len(files) != spec.num_images + 1:
        return f"manifest lists {len(files)} files, expected {spec.num_images + 1}"
    for rel, digest in files.items():
        path = os.path.join(split_dir, rel)
        if not os.path.isfile(path):
            return f"missing file {rel}"
        if sha256_file(path) != digest:
            return f"checksum mismatch for {rel}"
    return None


def ensure_shapes(name, root=None, spec=None):
    """Makes sure split `name` is generated and intact under `root`; returns its directory.

    Safe to call from several processes at once (a file lock serialises generation).
    """
    spec = spec or SPLITS[name]
    root = root or default_cache_root()
    split_dir = os.path.join(root, name)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = (
            verify_split(split_dir, spec) if os.path.exists(split_dir) else "not generated yet"
        )
        if problem is None:
            return split_dir
        if os.path.exists(split_dir):
            logger.warning(f"Cached {name} at {split_dir} is unusable: {problem}. Regenerating it.")
        else:
            logger.info(f"Generating {name} ({spec.num_images} images) into {split_dir} ...")
        tmp_dir = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
        try:
            manifest = _write_split(name, spec, os.path.join(tmp_dir, "data"))
            with open(os.path.join(tmp_dir, "data", "manifest.json"), "w") as f:
                json.dump(manifest, f)
            shutil.rmtree(split_dir, ignore_errors=True)
            os.replace(
                os.path.join(tmp_dir, "data"), split_dir
            )  # the complete split appears at once
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return split_dir
