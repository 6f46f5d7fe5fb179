"""Bad data: unreadable images name the file (or are skipped and counted), invalid boxes are
clipped or dropped with a counted warning, images left without boxes follow
DATALOADER.FILTER_EMPTY_ANNOTATIONS, and the heads train on images without boxes."""

import contextlib
import json
import logging
import os
import shutil

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, get_detection_dataset_dicts
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage

from detcommon import add_common_config, register_coco_dataset
from detcommon.data.mapper import CheckedDatasetMapper
from detcommon.data.shapes import ensure_shapes
from tests.conftest import TINY_OPTS, project_cfg, run_train_net

NAME = "reliability_bad_data"


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    """Six shapes_val images: 0 truncated, 1 not an image, 2 with one zero-width box only,
    3 with three extra boxes (zero width, outside the image, partly outside), 4-5 as they are.
    Returns (json file, image dir, the width of image 3)."""
    split = ensure_shapes("shapes_val")
    with open(os.path.join(split, "annotations.json")) as f:
        coco = json.load(f)
    root = str(tmp_path_factory.mktemp("bad_data"))
    images = coco["images"][:6]
    for image in images:
        shutil.copy(os.path.join(split, "images", image["file_name"]), root)
    with open(os.path.join(root, images[0]["file_name"]), "rb") as f:
        data = f.read()
    with open(os.path.join(root, "truncated.png"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(root, "not_an_image.png"), "w") as f:
        f.write("not an image")
    images[0]["file_name"], images[1]["file_name"] = "truncated.png", "not_an_image.png"
    ids = [image["id"] for image in images]
    annotations = [
        a for a in coco["annotations"] if a["image_id"] in ids and a["image_id"] != ids[2]
    ]
    w = images[3]["width"]
    for bbox in ([5, 5, 0, 10], [10, 10, -3, 5], [w + 5, 10, 20, 20], [w - 10, 5, 30, 20]):
        image_id = ids[2] if bbox == [5, 5, 0, 10] else ids[3]
        annotations.append(
            {
                "id": 10_000 + len(annotations),
                "image_id": image_id,
                "category_id": 1,
                "bbox": bbox,
                "area": 100.0,
                "iscrowd": 0,
            }
        )
    json_file = os.path.join(root, "annotations.json")
    with open(json_file, "w") as f:
        json.dump({**coco, "images": images, "annotations": annotations}, f)
    register_coco_dataset(NAME, json_file, root)
    return json_file, root, w


@contextlib.contextmanager
def _warnings(logger_name):
    """Collects the messages of a logger (train_net's setup_logger turns off propagation)."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger(logger_name).addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger(logger_name).removeHandler(handler)


def test_invalid_boxes_are_clipped_or_dropped_with_a_counted_warning(bad_dataset):
    _, root, w = bad_dataset
    with _warnings("detcommon.data.mapper") as messages:
        dicts = DatasetCatalog.get(NAME)
    (message,) = messages
    assert f"Dataset {NAME!r}: dropped 2 box(es) with non-positive width or height" in message
    assert "dropped 1 box(es) entirely outside their image" in message
    assert "clipped 1 box(es) partly outside their image" in message
    assert dicts[2]["annotations"] == []
    clipped = dicts[3]["annotations"][-1]
    assert clipped["bbox_mode"] == BoxMode.XYXY_ABS and clipped["bbox"] == [w - 10, 5, w, 25]
    for record in dicts:
        for ann in record["annotations"]:
            x0, y0, x1, y1 = BoxMode.convert(ann["bbox"], ann["bbox_mode"], BoxMode.XYXY_ABS)
            assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]


def test_images_left_without_boxes_follow_filter_empty_annotations(bad_dataset):
    assert len(get_detection_dataset_dicts([NAME], filter_empty=False)) == 6
    assert len(get_detection_dataset_dicts([NAME], filter_empty=True)) == 5


def test_unreadable_image_names_the_file_or_is_skipped_and_counted(bad_dataset):
    _, root, _ = bad_dataset
    cfg = get_cfg()
    add_common_config(cfg)
    truncated, not_an_image = DatasetCatalog.get(NAME)[:2]
    for is_train in (True, False):
        with pytest.raises(
            OSError, match=f"Cannot read image '{root}/truncated.png'.*DATALOADER.SKIP_BAD_IMAGES"
        ):
            CheckedDatasetMapper(cfg, is_train=is_train)(truncated)
    cfg.DATALOADER.SKIP_BAD_IMAGES = True
    with pytest.raises(OSError, match="not_an_image.png"):  # evaluation never skips
        CheckedDatasetMapper(cfg, is_train=False)(not_an_image)
    mapper = CheckedDatasetMapper(cfg, is_train=True)
    with _warnings("detcommon.data.mapper") as messages:
        assert mapper(truncated) is None and mapper(not_an_image) is None
    assert "truncated.png" in messages[0] and "1 image(s) skipped so far" in messages[0]
    assert "not_an_image.png" in messages[1] and "2 image(s) skipped so far" in messages[1]


@pytest.mark.parametrize(
    "config_file", ["configs/shapes/dh_ext.yaml", "configs/shapes/drcnn_cascade.yaml"]
)
def test_heads_train_on_images_without_boxes(config_file):
    cfg = project_cfg(config_file)
    cfg.merge_from_list([*TINY_OPTS, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    empty = Instances(
        (128, 160), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    with EventStorage():
        losses = model([{"image": torch.rand(3, 128, 160) * 255, "instances": empty}] * 2)
    assert all(v.isfinite() for v in losses.values()), losses
    sum(losses.values()).backward()


def _train_on_bad_data(bad_dataset, out, *opts):
    json_file, root, _ = bad_dataset
    return run_train_net(
        "--config-file", "configs/shapes/dh_ext.yaml", "--dataset", NAME, json_file, root, *TINY_OPTS,
        "DATASETS.TRAIN", f"('{NAME}',)", "DATASETS.TEST", "()", "OUTPUT_DIR", out, *opts,
    )  # fmt: skip


def test_training_stops_naming_the_unreadable_image(bad_dataset, tmp_path):
    code, log = _train_on_bad_data(bad_dataset, str(tmp_path))
    _, root, _ = bad_dataset
    assert code != 0
    assert (
        f"Cannot read image '{root}/truncated.png'" in log
        or f"Cannot read image '{root}/not_an_image.png'" in log
    )
    assert (
        "Removed 1 images with no usable annotations. 5 images left." in log
    )  # FILTER_EMPTY_ANNOTATIONS True
    assert "dropped 2 box(es) with non-positive width or height" in log


def test_training_skips_unreadable_images_when_asked(bad_dataset, tmp_path):
    code, log = _train_on_bad_data(
        bad_dataset,
        str(tmp_path),
        "DATALOADER.SKIP_BAD_IMAGES",
        "True",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
        "False",
    )
    assert code == 0, log[-3000:]
    assert (
        "Skipped unreadable image" in log and "truncated.png" in log and "not_an_image.png" in log
    )
    assert "2 image(s) skipped so far" in log
    assert "Removed" not in log  # the image without boxes was trained on
    assert os.path.isfile(os.path.join(tmp_path, "model_final.pth"))
