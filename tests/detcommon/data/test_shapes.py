"""The embedded shapes dataset: deterministic, valid COCO, and a corrupt cache is never used."""

import json
import logging
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from detcommon.data.shapes import (
    SHAPES_CLASSES,
    SPLITS,
    ShapesSpec,
    ensure_shapes,
    render_image,
    verify_split,
)

SMALL = ShapesSpec(num_images=12, seed=7)


def _load(split_dir):
    with open(os.path.join(split_dir, "annotations.json")) as f:
        return json.load(f)


def test_render_is_deterministic():
    img_a, anns_a = render_image(SMALL, 3)
    img_b, anns_b = render_image(SMALL, 3)
    assert np.array_equal(img_a, img_b) and anns_a == anns_b
    img_c, _ = render_image(SMALL, 4)
    assert img_c.shape != img_a.shape or not np.array_equal(img_c, img_a)


def test_two_generations_are_byte_identical(tmp_path):
    a = ensure_shapes("s", root=str(tmp_path / "a"), spec=SMALL)
    b = ensure_shapes("s", root=str(tmp_path / "b"), spec=SMALL)
    manifest = lambda d: json.load(open(os.path.join(d, "manifest.json")))["files"]  # noqa: E731
    assert manifest(a) == manifest(b)
    assert len(manifest(a)) == SMALL.num_images + 1


def test_registered_splits_are_valid_coco(shapes_root):
    """The real splits: sizes, pycocotools loads them, boxes inside images, classes, size spread."""
    assert SPLITS["shapes_train"].num_images >= 500 and SPLITS["shapes_val"].num_images >= 100
    for name, spec in SPLITS.items():
        split_dir = ensure_shapes(name)
        assert split_dir.startswith(shapes_root)
        coco = COCO(os.path.join(split_dir, "annotations.json"))
        assert len(coco.getImgIds()) == spec.num_images
        assert [c["name"] for c in coco.loadCats(sorted(coco.getCatIds()))] == SHAPES_CLASSES
        assert sorted(coco.getCatIds()) == list(range(1, len(SHAPES_CLASSES) + 1))
        areas = []
        for img in coco.loadImgs(coco.getImgIds()):
            assert 256 <= img["height"] <= 320 and 256 <= img["width"] <= 320
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= 10
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert w > 0 and h > 0 and x >= 0 and y >= 0
                assert x + w <= img["width"] and y + h <= img["height"]
                assert 0 < ann["area"] <= w * h
                areas.append(ann["area"])
        areas = np.array(areas)
        small, large = (areas < 32**2).mean(), (areas >= 96**2).mean()
        assert small > 0.2 and large > 0.02 and 1 - small - large > 0.2, (small, large)
        per_class = np.bincount([a["category_id"] for a in coco.loadAnns(coco.getAnnIds())])
        assert (per_class[1:] > 0.1 * per_class.sum()).all()


def test_objects_overlap_only_partially():
    """Some boxes overlap (occlusion exists), and every visible area keeps most of its shape."""
    overlapping = 0
    for index in range(40):
        _, anns = render_image(SPLITS["shapes_val"], index)
        boxes = np.array([a["bbox"] for a in anns])
        x0, y0 = boxes[:, 0], boxes[:, 1]
        x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
        iw = np.clip(np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0), 0, None)
        ih = np.clip(np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0), 0, None)
        inter = iw * ih
        np.fill_diagonal(inter, 0)
        overlapping += int((inter > 0).any(axis=1).sum())
    assert overlapping > 20


@pytest.mark.parametrize(
    "damage",
    ["delete_image", "flip_byte", "truncate_json", "drop_manifest", "other_params"],
)
def test_corrupt_cache_is_detected_and_regenerated(tmp_path, damage, caplog):
    root = str(tmp_path)
    split_dir = ensure_shapes("s", root=root, spec=SMALL)
    good = json.load(open(os.path.join(split_dir, "manifest.json")))
    image = os.path.join(split_dir, "images", "00005.png")
    if damage == "delete_image":
        os.remove(image)
    elif damage == "flip_byte":
        data = bytearray(open(image, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(image, "wb").write(bytes(data))
    elif damage == "truncate_json":
        path = os.path.join(split_dir, "annotations.json")
        open(path, "r+b").truncate(100)
    elif damage == "drop_manifest":
        os.remove(os.path.join(split_dir, "manifest.json"))
    spec = ShapesSpec(num_images=12, seed=8) if damage == "other_params" else SMALL
    assert verify_split(split_dir, spec) is not None
    # Attach to the module's logger: train_net's setup_logger stops "detcommon" from propagating.
    logger = logging.getLogger("detcommon.data.shapes")
    logger.addHandler(caplog.handler)
    try:
        again = ensure_shapes("s", root=root, spec=spec)
    finally:
        logger.removeHandler(caplog.handler)
    assert "unusable" in caplog.text
    assert verify_split(again, spec) is None
    if spec == SMALL:
        assert json.load(open(os.path.join(again, "manifest.json"))) == good


def test_intact_cache_is_reused(tmp_path):
    split_dir = ensure_shapes("s", root=str(tmp_path), spec=SMALL)
    stamp = os.stat(os.path.join(split_dir, "manifest.json")).st_mtime_ns
    ensure_shapes("s", root=str(tmp_path), spec=SMALL)
    assert os.stat(os.path.join(split_dir, "manifest.json")).st_mtime_ns == stamp


def test_detectron2_catalog_and_metadata():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import detcommon  # noqa: F401  (registers the splits)

    dicts = DatasetCatalog.get("shapes_val")
    assert len(dicts) == SPLITS["shapes_val"].num_images
    meta = MetadataCatalog.get("shapes_val")
    assert meta.thing_classes == SHAPES_CLASSES and meta.evaluator_type == "coco"
    assert os.path.isfile(meta.json_file)
    classes = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert classes == set(range(len(SHAPES_CLASSES)))  # contiguous ids for the model
