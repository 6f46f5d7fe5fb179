"""Mixed precision: every shapes model trains a step and infers under CPU bfloat16 autocast
(`torch.autocast("cpu", dtype=torch.bfloat16)`, what SOLVER.AMP.ENABLED does on CUDA with
float16) with finite losses, gradients and detections, and from the same proposals its
detections stay close to float32's; SOLVER.AMP.ENABLED on the CPU is refused up front."""

import copy
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import pairwise_iou
from detectron2.utils.events import EventStorage

from decoupled_rcnn import add_decoupled_rcnn_config
from detcommon import add_common_config
from double_head import add_doublehead_config
from tests.conftest import REPO, TINY_OPTS, run_train_net

MODELS = ["faster_rcnn", "dh", "dh_ext", "drcnn", "drcnn_cascade", "drcnn_dh"]
# Small and fast: narrow FPN and conv-head, small inputs, few RoIs. Inference keeps every
# (proposal, class) box (no score threshold, no NMS, no top-k) so that the two precisions'
# outputs can be compared as sets.
OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.DOUBLE_HEAD.CONV_HEAD.CONV_DIM", 32, "MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_DIM", 16,
    "INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 192, "INPUT.MIN_SIZE_TEST", 128,
    "INPUT.MAX_SIZE_TEST", 192, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 32,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST", 1.0, "TEST.DETECTIONS_PER_IMAGE", -1,
]  # fmt: skip


def _cfg(model):
    cfg = get_cfg()
    add_common_config(cfg)
    add_doublehead_config(cfg)
    add_decoupled_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, f"configs/shapes/{model}.yaml"))
    cfg.merge_from_list(OPTS)
    return cfg


@pytest.fixture(scope="module")
def images():
    """Two shapes_val images (Detectron2 dataset dicts)."""
    return DatasetCatalog.get("shapes_val")[:2]


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("model_name", MODELS)
def test_bfloat16_training_step_and_inference(model_name, images):
    cfg = _cfg(model_name)
    torch.manual_seed(0)
    model = build_model(cfg)
    train_batch = [DatasetMapper(cfg, is_train=True)(d) for d in images]
    model.train()
    with _bf16(), EventStorage():
        losses = model(train_batch)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 0.9 * sum(1 for p in model.parameters() if p.requires_grad)
    assert all(torch.isfinite(g).all() for g in grads)

    model.eval()
    test_batch = [DatasetMapper(cfg, is_train=False)(d) for d in images]
    with torch.no_grad():
        with _bf16():
            (end_to_end, _) = model(test_batch)
        assert len(end_to_end["instances"]) > 0
        assert torch.isfinite(end_to_end["instances"].pred_boxes.tensor).all()
        # The same proposals through the RoI heads in both precisions.
        processed = model.preprocess_image(test_batch)
        proposals, _ = model.proposal_generator(processed, model.backbone(processed.tensor))
        outputs = {}
        for precision in ("float32", "bfloat16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                features = model.backbone(processed.tensor)
                outputs[precision], _ = model.roi_heads(
                    processed, features, copy.deepcopy(proposals)
                )
    for fp32, bf16 in zip(outputs["float32"], outputs["bfloat16"]):
        # No score threshold, NMS or top-k: every proposal gets a box per class in both.
        assert len(fp32) == len(bf16) > 0
        assert torch.isfinite(bf16.pred_boxes.tensor).all() and torch.isfinite(bf16.scores).all()
        # The scores as a set: sorted, they differ by at most a few hundredths (bfloat16 has
        # 8 bits of mantissa); every float32 box has a bfloat16 box of its class on top of it.
        scores32, scores16 = fp32.scores.sort().values, bf16.scores.float().sort().values
        gap = float((scores32 - scores16).abs().max())
        print(f"{model_name}: largest sorted-score gap bfloat16 vs float32 {gap:.4f}")  # pytest -s
        assert gap < 0.03
        for c in fp32.pred_classes.unique():
            a, b = fp32[fp32.pred_classes == c], bf16[bf16.pred_classes == c]
            assert len(a) == len(b)
            best = pairwise_iou(a.pred_boxes, b.pred_boxes).max(dim=1).values
            assert best.min() > 0.9, (model_name, int(c), float(best.min()))


@pytest.mark.parametrize(
    "config, opts, refused, fix",
    [
        ("configs/shapes/dh_ext.yaml", [*TINY_OPTS, "SOLVER.AMP.ENABLED", "True", "OUTPUT_DIR"],
         "SOLVER.AMP.ENABLED True needs CUDA", "Set SOLVER.AMP.ENABLED False"),
        ("configs/lazy/shapes/dh_ext.py", ["train.amp.enabled=True", "train.output_dir="],
         "train.amp.enabled=True needs CUDA", "Set train.amp.enabled=False"),
    ],
    ids=["yaml", "lazy"],
)  # fmt: skip
def test_amp_training_on_the_cpu_is_refused_before_anything_is_built(
    tmp_path, config, opts, refused, fix
):
    *opts, output = opts
    output = [output, str(tmp_path)] if output == "OUTPUT_DIR" else [f"{output}{tmp_path}"]
    code, log = run_train_net("--config-file", config, *opts, *output)
    assert code != 0 and refused in log and fix in log, log[-2000:]
    assert "Starting training" not in log and not (tmp_path / "model_0000001.pth").exists()
