"""tools/benchmark.py end to end on tiny CPU models: table, JSON, ratios, per-config options."""

import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from decoupled_rcnn import add_decoupled_rcnn_config
from detcommon import add_common_config
from double_head import add_doublehead_config
from tests.conftest import REPO

# Shrinks every model and run; the same for every config, so the ratios stay meaningful.
TINY = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
        "MODEL.DOUBLE_HEAD.CONV_HEAD.CONV_DIM", "32",
        "MODEL.DOUBLE_HEAD.CONV_HEAD.BOTTLENECK_DIM", "16",
        "MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_DIM", "16",
        "SOLVER.IMS_PER_BATCH", "2", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.DECOUPLED.REG_BATCH_SIZE_PER_IMAGE", "32"]  # fmt: skip


def test_benchmark_end_to_end(tmp_path):
    baseline = "configs/shapes/faster_rcnn.yaml"
    cfg = get_cfg()
    for add_config in (add_common_config, add_doublehead_config, add_decoupled_rcnn_config):
        add_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, baseline))
    cfg.merge_from_list(TINY + ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("baseline")
    configs = [
        baseline,
        "configs/shapes/dh_ext.yaml MODEL.DOUBLE_HEAD.FUSED_PREFILTER_THRESH 0.1",
        "configs/shapes/drcnn_cascade.yaml",
    ]
    output = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--configs", *configs,
         "--weights", str(tmp_path / "baseline.pth"), "none", "",
         "--device", "cpu", "--input-size", "160", "128", "--num-proposals", "50",
         "--iters", "2", "--warmup", "1", "--train-dataset", "shapes_val",
         "--output", str(output), "--opts", *TINY],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]

    names = ["shapes/faster_rcnn", "shapes/dh_ext FUSED_PREFILTER_THRESH=0.1",
             "shapes/drcnn_cascade"]  # fmt: skip
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(configs), proc.stdout  # header, separator, one row each
    for name, row in zip(names, table[2:]):
        assert row.startswith(f"| {name} |")
    assert table[2].count("(1.00x)") == 6

    data = json.loads(output.read_text())
    assert data["settings"]["input_size"] == [160, 128]
    assert [r["name"] for r in data["results"]] == names
    assert data["results"][0]["weights"] == str(tmp_path / "baseline.pth")
    for r in data["results"]:
        for key in data["columns"]:
            assert r[key] > 0, (r["name"], key)
            assert r["ratios"][key] > 0, (r["name"], key)
        first = data["results"][0]
        assert all(r["ratios"][k] == pytest.approx(r[k] / first[k]) for k in data["columns"])
        assert 0 < r["proposals_per_image"] <= 50
        # the first head of every model runs on every proposal; the later ones on no more
        first_head, *later_heads = r["head_rois_per_image"].values()
        assert first_head == r["proposals_per_image"]
        assert all(0 <= n <= first_head for n in later_heads), r["head_rois_per_image"]
    assert [list(r["head_rois_per_image"]) for r in data["results"]] == [
        ["fc"],
        ["fc", "conv"],
        ["classifier", "regressor_stage1", "regressor_stage2", "regressor_stage3"],
    ]
    assert table[2].endswith(f"| fc {data['results'][0]['proposals_per_image']:.1f} |")
    assert all(ratio == 1.0 for ratio in data["results"][0]["ratios"].values())
    # more parameters and more FLOPs than the baseline: the conv-head, the regression stages
    for r in data["results"][1:]:
        assert r["ratios"]["params_m"] > 1 and r["ratios"]["gflops"] > 1, r
