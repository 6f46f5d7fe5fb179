"""Users' own COCO-format datasets: registered from the command line, bad files refused early."""

import json

import pytest

from detcommon.data.datasets import (
    DatasetFormatError,
    register_coco_dataset,
    validate_coco_detection_json,
)
from detcommon.engine.train import argument_parser, setup


def _write_coco(path, **override):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [1, 1, 4, 4],
                "iscrowd": 0,
                "area": 16,
            }
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "van"}],
    }
    data.update(override)
    path.write_text(json.dumps(data))
    return str(path)


def test_valid_file_gives_class_names(tmp_path):
    assert validate_coco_detection_json(_write_coco(tmp_path / "a.json"), str(tmp_path)) == [
        "car",
        "van",
    ]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing.json"), "does not exist"),
        (lambda p: (p / "bad.json").write_text("{not json") and str(p / "bad.json"), "Cannot read"),
        (
            lambda p: (p / "list.json").write_text("[]") and str(p / "list.json"),
            "top level is not an object",
        ),
        (lambda p: _write_coco(p / "x.json", annotations=None), "no list 'annotations'"),
        (lambda p: _write_coco(p / "x.json", images=[{"id": 1}]), "images[0] lacks file_name"),
        (
            lambda p: _write_coco(
                p / "x.json",
                annotations=[{"id": 1, "image_id": 1, "category_id": 3, "segmentation": []}],
            ),
            "annotations[0] lacks bbox",
        ),
        (
            lambda p: _write_coco(
                p / "x.json",
                annotations=[{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2]}],
            ),
            "is not [x, y, w, h]",
        ),
        (
            lambda p: _write_coco(
                p / "x.json",
                annotations=[{"id": 1, "image_id": 9, "category_id": 3, "bbox": [1, 1, 2, 2]}],
            ),
            "unknown image 9",
        ),
        (
            lambda p: _write_coco(
                p / "x.json",
                annotations=[{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 2]}],
            ),
            "unknown category 4",
        ),
        (lambda p: _write_coco(p / "x.json", images=[]), "lists no images"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path, make, message):
    json_file = make(tmp_path)
    with pytest.raises(DatasetFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_coco_detection_json(json_file, str(tmp_path))


def test_missing_image_dir(tmp_path):
    with pytest.raises(DatasetFormatError, match="Image directory"):
        validate_coco_detection_json(_write_coco(tmp_path / "a.json"), str(tmp_path / "nope"))


def test_name_clash_with_other_files(tmp_path):
    a = _write_coco(tmp_path / "a.json")
    b = _write_coco(tmp_path / "b.json")
    register_coco_dataset("clash_test", a, str(tmp_path))
    register_coco_dataset("clash_test", a, str(tmp_path))  # same files: fine
    with pytest.raises(DatasetFormatError, match="already registered"):
        register_coco_dataset("clash_test", b, str(tmp_path))


def _args(tmp_path, *extra):
    return argument_parser().parse_args(
        [
            "--config-file",
            "configs/shapes/faster_rcnn.yaml",
            *extra,
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )


def test_dataset_flag_registers_and_checks_num_classes(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    json_file = _write_coco(tmp_path / "kitti.json")
    cfg = setup(
        _args(
            tmp_path,
            "--dataset",
            "kitti_tiny_ok",
            json_file,
            str(tmp_path),
            "DATASETS.TRAIN",
            "('kitti_tiny_ok',)",
            "DATASETS.TEST",
            "('kitti_tiny_ok',)",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "2",
        )
    )
    assert [list(e) for e in cfg.DATASETS.REGISTER_COCO] == [
        ["kitti_tiny_ok", json_file, str(tmp_path)]
    ]
    assert MetadataCatalog.get("kitti_tiny_ok").thing_classes == ["car", "van"]
    assert len(DatasetCatalog.get("kitti_tiny_ok")) == 1
    with pytest.raises(ValueError, match="has 2 classes but MODEL.ROI_HEADS.NUM_CLASSES is 5"):
        setup(
            _args(
                tmp_path,
                "--dataset",
                "kitti_tiny_5",
                json_file,
                str(tmp_path),
                "DATASETS.TRAIN",
                "('kitti_tiny_5',)",
            )
        )


def test_unknown_dataset_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="DATASETS.TRAIN names 'nowhere'"):
        setup(_args(tmp_path, "DATASETS.TRAIN", "('nowhere',)"))


def test_bad_dataset_flag_fails_before_training(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        setup(_args(tmp_path, "--dataset", "broken", str(tmp_path / "none.json"), str(tmp_path)))
