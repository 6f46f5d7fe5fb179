"""The pretrained shapes backbone: crops, cache verification, and loading into every model."""

import dataclasses
import json
import os
from unittest import mock

import pytest
import torch

from detcommon import pretrain
from detcommon.pretrain import RECIPES, SCHEME, ensure_pretrained, fingerprint, make_crops

TINY = dataclasses.replace(RECIPES["R-18-GN"], num_images=4, iters=2, warmup_iters=1, batch_size=8)


def test_crops_cover_every_class_and_background():
    images, labels = make_crops(dataclasses.replace(TINY, num_images=30))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 64, 64)
    assert len(images) == len(labels)
    counts = torch.bincount(labels, minlength=6)
    assert (counts > 0).all(), counts  # 5 shapes + background


def test_crops_are_deterministic_and_apart_from_the_detection_splits():
    a, la = make_crops(TINY)
    b, lb = make_crops(TINY)
    assert torch.equal(a, b) and torch.equal(la, lb)
    from detcommon.data.shapes import SPLITS

    assert TINY.data_seed not in {s.seed for s in SPLITS.values()}


def test_cache_is_made_once_verified_and_remade_when_corrupt(tmp_path):
    path = ensure_pretrained("tiny", root=str(tmp_path), recipe=TINY)
    with open(os.path.join(tmp_path, "tiny.json")) as f:
        manifest = json.load(f)
    assert manifest["recipe"] == TINY.to_dict() and 0 <= manifest["heldout_accuracy"] <= 1
    # the machine is recorded: its CPU and thread count decide the bytes
    made_on = manifest["made_on"]
    assert made_on["threads"] == torch.get_num_threads() and made_on["torch"] == torch.__version__
    assert made_on["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and made_on["cpu"]
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["model"] and all(
        k.startswith("backbone.bottom_up.") for k in checkpoint["model"]
    )
    # intact: not trained again
    with mock.patch.object(pretrain, "pretrain", side_effect=AssertionError("retrained")):
        assert ensure_pretrained("tiny", root=str(tmp_path), recipe=TINY) == path
    # a changed byte or another recipe: trained again
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    calls = []
    real = pretrain.pretrain
    with mock.patch.object(pretrain, "pretrain", side_effect=lambda r: calls.append(r) or real(r)):
        ensure_pretrained("tiny", root=str(tmp_path), recipe=TINY)
        ensure_pretrained("tiny", root=str(tmp_path), recipe=dataclasses.replace(TINY, seed=1))
    assert len(calls) == 2


def test_fingerprint_repeats_on_one_machine_and_tells_recipes_apart():
    a = fingerprint(TINY, iters=2, num_images=4)
    assert a == fingerprint(TINY, iters=2, num_images=4)
    assert len(a["sha256"]) == 64 and a["iters"] == 2 and a["threads"] == torch.get_num_threads()
    assert fingerprint(dataclasses.replace(TINY, seed=1), iters=2, num_images=4) != a
    assert fingerprint(TINY, iters=1, num_images=4)["sha256"] != a["sha256"]


def test_weights_load_into_every_backbone_parameter_of_a_shapes_model(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from tests.conftest import tiny_double_head_cfg

    path = ensure_pretrained("tiny", root=str(tmp_path), recipe=TINY)
    cfg = tiny_double_head_cfg()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(path)
    saved = torch.load(path, weights_only=False)["model"]
    state = model.state_dict()
    bottom_up = [k for k in state if k.startswith("backbone.bottom_up.")]
    assert sorted(bottom_up) == sorted(saved)
    assert all(torch.equal(state[k], saved[k]) for k in bottom_up)


def test_scheme_resolves_through_detectron2_path_manager(tmp_path, monkeypatch):
    from detectron2.utils.file_io import PathManager

    monkeypatch.setitem(RECIPES, "tiny", TINY)
    monkeypatch.setenv("SHAPES_PRETRAINED_DIR", str(tmp_path))
    assert PathManager.get_local_path(SCHEME + "tiny") == os.path.join(tmp_path, "tiny.pth")
    with pytest.raises(KeyError, match="shapes-pretrained://R-18-GN"):
        PathManager.get_local_path(SCHEME + "R-99")
