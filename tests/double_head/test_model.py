"""DoubleHeadROIHeads in a detector: pooling, modes, gradients, configs, evaluation, export."""

import copy
import glob
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.engine import DefaultPredictor
from detectron2.export import TracingAdapter
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model, build_roi_heads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, StandardROIHeads
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.testing import assert_instances_allclose

from detcommon import add_common_config
from detcommon.poolers import EnlargedROIPooler, enlarge_boxes
from double_head import (
    DoubleHeadConvHead,
    MultiModeInference,
    add_doublehead_config,
    multi_mode_evaluation,
)
from double_head.evaluation import MultiModeEvaluator
from tests.conftest import REPO, TINY_OPTS, run_train_net, tiny_double_head_cfg

torch.set_num_threads(1)

MODES = ["conv", "fc", "double", "fused"]


def _cfg(config="configs/shapes/dh_ext.yaml", opts=()):
    """A shapes config, shrunk to a model that runs in milliseconds on the CPU."""
    return tiny_double_head_cfg(config, [
        "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.DOUBLE_HEAD.CONV_HEAD.BOTTLENECK_DIM", 8,
        "MODEL.RPN.POST_NMS_TOPK_TEST", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96, "TEST.DETECTIONS_PER_IMAGE", 10,
        *opts,
    ])  # fmt: skip


def _inputs(with_targets=True):
    """Two small random images, each with two ground-truth boxes."""
    g = torch.Generator().manual_seed(0)
    inputs = []
    for h, w in [(64, 80), (72, 64)]:
        x = {"image": torch.rand(3, h, w, generator=g) * 255, "height": 2 * h, "width": 2 * w}
        if with_targets:
            gt = Instances((h, w))
            gt.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 44.0]]))
            gt.gt_classes = torch.tensor([1, 3])
            x["instances"] = gt
        inputs.append(x)
    return inputs


def _model(*opts, config="configs/shapes/dh_ext.yaml"):
    torch.manual_seed(0)
    return build_model(_cfg(config, opts))


FPN_SHAPES = {f"p{i}": ShapeSpec(channels=32, stride=2**i) for i in range(2, 6)}


def _pooling_case(*opts):
    """
    DoubleHeadROIHeads of the tiny Ext model on random FPN features of two 256 x 256 images, the
    RoI features each branch's box head receives from hand-made proposals, and those proposals:
    a 100 px box on P2 that enlarged by 1.3 would map to P3, a box in the image corner and one
    at the bottom-right border, whose enlarged boxes cross the image border.
    """
    cfg = _cfg(opts=opts)
    torch.manual_seed(0)
    heads = build_roi_heads(cfg, FPN_SHAPES).eval()
    features = [torch.rand(2, 32, 256 // s.stride, 256 // s.stride) for s in FPN_SHAPES.values()]
    proposals = []
    for boxes in (
        [[78.0, 78.0, 178.0, 178.0], [0.0, 0.0, 40.0, 40.0]],
        [[200.0, 180.0, 256.0, 256.0]],
    ):
        p = Instances((256, 256))
        p.proposal_boxes = Boxes(torch.tensor(boxes))
        proposals.append(p)
    seen = {}
    for branch, head in heads.box_heads.items():
        head.register_forward_pre_hook(lambda m, args, b=branch: seen.update({b: args[0]}))
    with torch.no_grad():
        heads._predict_branches(features, proposals)
    return cfg, heads, features, proposals, seen


def _pooler(cfg, cls=ROIPooler, **kwargs):
    head = cfg.MODEL.ROI_BOX_HEAD
    return cls(
        head.POOLER_RESOLUTION, tuple(1.0 / s.stride for s in FPN_SHAPES.values()),
        head.POOLER_SAMPLING_RATIO, head.POOLER_TYPE, **kwargs,
    )  # fmt: skip


def _enlarged_clipped(proposals):
    """The earlier pooling's boxes: enlarged by 1.3, clipped to the image."""
    boxes = [enlarge_boxes(p.proposal_boxes, 1.3) for p in proposals]
    for b, p in zip(boxes, proposals):
        b.clip(p.image_size)
    return boxes


def test_conv_branch_pools_on_the_level_of_the_proposal_unclipped():
    """Default (authors' PoolerNeighbor): the enlarged box, unclipped, on the proposal's level."""
    cfg, heads, features, proposals, seen = _pooling_case()
    assert heads.conv_roi_pooling == "original_level"
    boxes = [p.proposal_boxes for p in proposals]
    assert torch.equal(seen["fc"], _pooler(cfg)(features, boxes))
    expected = _pooler(cfg, EnlargedROIPooler, scale=1.3)(features, boxes)
    assert torch.equal(seen["conv"], expected)
    # every proposal differs from the earlier pooling: by its level, or by its clipping
    earlier = _pooler(cfg)(features, _enlarged_clipped(proposals))
    assert all(not torch.allclose(a, b, atol=1e-4) for a, b in zip(seen["conv"], earlier))


def test_conv_branch_earlier_pooling_is_an_option():
    cfg, heads, features, proposals, seen = _pooling_case(
        "MODEL.DOUBLE_HEAD.CONV_ROI_POOLING", "enlarged_clipped"
    )
    assert heads.conv_box_pooler is None
    assert torch.equal(seen["conv"], _pooler(cfg)(features, _enlarged_clipped(proposals)))


@pytest.mark.parametrize("pooling", ["original_level", "enlarged_clipped"])
def test_conv_roi_scale_one_pools_once(pooling):
    opts = ["MODEL.DOUBLE_HEAD.CONV_ROI_SCALE", 1.0, "MODEL.DOUBLE_HEAD.CONV_ROI_POOLING", pooling]
    cfg, heads, features, proposals, seen = _pooling_case(*opts)
    assert heads.conv_box_pooler is None
    assert seen["conv"] is seen["fc"]  # one pooling serves both branches


@pytest.mark.parametrize("mode", MODES)
def test_output_shapes_per_mode(mode):
    model = _model("MODEL.DOUBLE_HEAD.TEST_MODE", mode).eval()
    with torch.no_grad():
        outputs = model(_inputs(with_targets=False))
    for output, x in zip(outputs, _inputs()):
        inst = output["instances"]
        n = len(inst)
        assert 0 < n <= 10 and inst.image_size == (x["height"], x["width"])
        assert inst.pred_boxes.tensor.shape == (n, 4) and inst.scores.shape == (n,)
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 5)).all()
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()


def test_branch_prediction_shapes():
    model = _model().eval()
    with torch.no_grad():
        images = model.preprocess_image(_inputs(with_targets=False))
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        features = [features[f] for f in model.roi_heads.box_in_features]
        predictions = model.roi_heads._predict_branches(features, proposals)
    num_rois = sum(len(p) for p in proposals)
    for branch in ("fc", "conv"):
        scores, deltas = predictions[branch]
        assert scores.shape == (num_rois, 6) and deltas.shape == (num_rois, 20)


def test_refused_modes_at_build_time():
    vanilla = ["MODEL.DOUBLE_HEAD.LAMBDA_FC", 1.0, "MODEL.DOUBLE_HEAD.LAMBDA_CONV", 1.0]
    with pytest.raises(ValueError, match="TEST_MODE='fused'.*conv branch's classifier.*never"):
        _model(*vanilla, "MODEL.DOUBLE_HEAD.TEST_MODE", "fused")
    with pytest.raises(ValueError, match="EVAL_MODES='fc'.*fc branch's box regressor"):
        _model(*vanilla, "MODEL.DOUBLE_HEAD.TEST_MODE", "double", "MODEL.DOUBLE_HEAD.EVAL_MODES",
               ["double", "fc"])  # fmt: skip
    with pytest.raises(ValueError, match="MODEL.DOUBLE_HEAD.FUSION must be one of"):
        _model("MODEL.DOUBLE_HEAD.FUSION", "product")
    with pytest.raises(ValueError, match="MODEL.DOUBLE_HEAD.CONV_ROI_SCALE must be > 0"):
        _model("MODEL.DOUBLE_HEAD.CONV_ROI_SCALE", 0.0)
    message = (
        r"MODEL.DOUBLE_HEAD.CONV_ROI_POOLING must be one of \['enlarged_clipped', "
        r"'original_level'\], got 'clipped': use 'original_level'"
    )
    with pytest.raises(ValueError, match=message):
        _model("MODEL.DOUBLE_HEAD.CONV_ROI_POOLING", "clipped")


def test_vanilla_losses_and_untrained_layers():
    model = _model(config="configs/shapes/dh.yaml")
    predictors = model.roi_heads.box_predictors
    assert predictors["fc"].bbox_pred is None and predictors["conv"].cls_score is None
    with EventStorage():
        losses = model(_inputs())
    assert set(losses) == {"loss_cls_fc", "loss_box_reg_conv", "loss_rpn_cls", "loss_rpn_loc"}


def test_zero_weight_branch_is_not_built():
    model = _model("MODEL.DOUBLE_HEAD.LOSS_WEIGHT_CONV", 0.0, "MODEL.DOUBLE_HEAD.TEST_MODE", "fc")
    assert list(model.roi_heads.box_heads) == ["fc"]
    with EventStorage():
        losses = model(_inputs())
    assert {k for k in losses if "rpn" not in k} == {"loss_cls_fc", "loss_box_reg_fc"}


def test_gradients_reach_both_heads():
    model = _model()
    with EventStorage():
        losses = model(_inputs())
    assert set(losses) >= {"loss_cls_fc", "loss_box_reg_fc", "loss_cls_conv", "loss_box_reg_conv"}
    sum(losses.values()).backward()
    for name, param in model.roi_heads.named_parameters():
        assert param.grad is not None, name
    heads = model.roi_heads.box_heads
    # The non-local blocks start as identities (last conv at zero), so their theta/phi/g receive
    # zero gradient on the first step; every other layer receives some, that last conv included
    # (its BN scale is 1: with the earlier zero BN scale it would receive none).
    assert heads.conv.nonlocal1.out.weight.grad.abs().sum() > 0
    for layer in [
        heads.fc.fc1,
        heads.conv.up_channel.conv1,
        heads.conv.bottleneck2.conv3,
        heads.conv.nonlocal1.out.norm,
        *model.roi_heads.box_predictors.values(),
    ]:
        assert any(p.grad.abs().sum() > 0 for p in layer.parameters()), layer  # fmt: skip


def test_single_fc_head_ablation_is_standard_faster_rcnn():
    """Table 1's single fc-head via DoubleHeadROIHeads = StandardROIHeads: losses and detections."""
    opts = ["MODEL.DOUBLE_HEAD.LOSS_WEIGHT_FC", 2.0, "MODEL.DOUBLE_HEAD.LAMBDA_FC", 0.5,
            "MODEL.DOUBLE_HEAD.LOSS_WEIGHT_CONV", 0.0,
            "MODEL.DOUBLE_HEAD.TEST_MODE", "fc"]  # fmt: skip
    cfg = _cfg(opts=opts)
    shapes = {f"p{i}": ShapeSpec(channels=32, stride=2**i) for i in range(2, 6)}
    double = build_roi_heads(cfg, shapes)
    standard = StandardROIHeads(cfg, shapes)
    state = {
        k.replace("box_heads.fc.", "box_head.").replace("box_predictors.fc.", "box_predictor."): v
        for k, v in double.state_dict().items()
    }
    standard.load_state_dict(state)

    features = {k: torch.rand(2, 32, 128 // s.stride, 128 // s.stride) for k, s in shapes.items()}
    images = None  # unused by the RoI heads
    proposals, targets = [], []
    for inputs in _inputs():
        p = Instances((64, 64))
        p.proposal_boxes = Boxes(torch.rand(40, 4).sort(dim=1).values * 60)  # x1 < y1 < x2 < y2
        p.objectness_logits = torch.rand(40)
        proposals.append(p)
        targets.append(inputs["instances"])

    runs = {}
    for name, heads in [("double", double), ("standard", standard)]:
        torch.manual_seed(1)  # same sampled RoIs
        with EventStorage():
            _, losses = heads(images, features, copy.deepcopy(proposals), targets)
        heads.eval()
        predictor = heads.box_predictors["fc"] if name == "double" else heads.box_predictor
        predictor.test_score_thresh = 0.0  # every proposal reaches NMS: detections to compare
        with torch.no_grad():
            detections, _ = heads(images, features, copy.deepcopy(proposals))
        runs[name] = losses, detections
    (double_losses, double_dets), (standard_losses, standard_dets) = (
        runs["double"],
        runs["standard"],
    )
    assert set(double_losses) == {"loss_cls_fc", "loss_box_reg_fc"}
    assert torch.allclose(double_losses["loss_cls_fc"], standard_losses["loss_cls"])
    assert torch.allclose(double_losses["loss_box_reg_fc"], standard_losses["loss_box_reg"])
    for a, b in zip(double_dets, standard_dets):
        assert len(a) > 0
        assert_instances_allclose(a, b)


BASELINE = os.path.join(REPO, "configs", "dh_faster_rcnn_R50_FPN_1x.yaml")  # the paper's FPN
CONFIGS = sorted(  # Double-Head's own
    {
        *glob.glob(os.path.join(REPO, "configs", "dh_*.yaml")),
        *glob.glob(os.path.join(REPO, "configs", "ablations", "dh_table*.yaml")),
    }
    - {BASELINE}
)


def _coco_cfg(path):
    cfg = get_cfg()
    add_doublehead_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def test_paper_configs_carry_the_authors_training_setup():
    """The Double-Head COCO configs, the FPN baseline included: the authors' solver and RoIAlign
    sampling (maskrcnn-benchmark's), their conv-branch pooling and non-local init."""
    authors = {
        "SOLVER.IMS_PER_BATCH": 8, "SOLVER.BASE_LR": 0.01, "SOLVER.STEPS": (120000, 160000),
        "SOLVER.MAX_ITER": 180000, "SOLVER.WARMUP_ITERS": 500, "SOLVER.WARMUP_FACTOR": 1 / 3,
        "SOLVER.WARMUP_METHOD": "linear", "SOLVER.BIAS_LR_FACTOR": 2.0,
        "SOLVER.WEIGHT_DECAY": 1e-4, "SOLVER.WEIGHT_DECAY_BIAS": 0.0,
        "SOLVER.WEIGHT_DECAY_NORM": 1e-4, "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 2,
        "MODEL.DOUBLE_HEAD.CONV_ROI_SCALE": 1.3,
        "MODEL.DOUBLE_HEAD.CONV_ROI_POOLING": "original_level",
        "MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_INIT": "zero_conv",
    }  # fmt: skip
    assert len(CONFIGS) >= 20
    for path in [BASELINE, *CONFIGS]:
        cfg = _coco_cfg(path)
        for key, value in authors.items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert node == pytest.approx(value), (path, key)
    assert _coco_cfg(BASELINE).MODEL.ROI_HEADS.NAME == "StandardROIHeads"


def test_every_config_builds_its_heads():
    """Every paper and ablation config builds; Table 1 and 2 files give the heads they name."""
    shapes = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 6)}
    built = {}
    for path in CONFIGS:
        heads = build_roi_heads(_coco_cfg(path), shapes)
        built[os.path.basename(path)[: -len(".yaml")]] = (
            {b: type(h) for b, h in heads.box_heads.items()},
            heads,
        )
    assert len(built) >= 20
    fc, conv = FastRCNNConvFCHead, DoubleHeadConvHead
    expected = {
        "dh_table1_single_fc": {"fc": fc},
        "dh_table1_single_conv": {"conv": conv},
        "dh_table1_double_fc": {"fc": fc, "conv": fc},
        "dh_table1_double_conv": {"fc": conv, "conv": conv},
        "dh_table1_reverse": {"fc": conv, "conv": fc},
        "dh_table1_double_head": {"fc": fc, "conv": conv},
    }
    for name, types in expected.items():
        assert built[name][0] == types, name
    depths = {"k1": (0, 0), "k3": (2, 0), "k5": (4, 0), "k7": (6, 0), "k3_nl": (1, 1),
              "k5_nl": (2, 2), "k7_nl": (3, 3)}  # fmt: skip
    for name, (bottlenecks, nonlocal_blocks) in depths.items():
        blocks = [n for n, _ in built[f"dh_table2_{name}"][1].box_heads.conv.named_children()]
        assert sum(b.startswith("bottleneck") for b in blocks) == bottlenecks, name
        assert sum(b.startswith("nonlocal") for b in blocks) == nonlocal_blocks, name


class _RecordingEvaluator:
    """Stands in for a COCOEvaluator: keeps what it was given."""

    def __init__(self, name):
        self.name, self.outputs = name, []

    def reset(self):
        self.outputs = []

    def process(self, inputs, outputs):
        self.outputs.extend(outputs)

    def evaluate(self):
        return {"bbox": {"AP": float(len(self.outputs))}}


def test_multi_mode_evaluation_runs_the_heads_once():
    model = _model().eval()
    calls = {}
    for name, module in [("backbone", model.backbone), ("fc", model.roi_heads.box_heads.fc),
                         ("conv", model.roi_heads.box_heads.conv)]:  # fmt: skip
        module.register_forward_hook(
            lambda m, i, o, name=name: calls.update({name: calls.get(name, 0) + 1})
        )
    cfg = _cfg(opts=["MODEL.DOUBLE_HEAD.EVAL_MODES", MODES, "DATASETS.TEST", ("a", "b")])
    wrapper, evaluators = multi_mode_evaluation(
        cfg, model, lambda cfg, dataset, folder: _RecordingEvaluator(folder)
    )
    assert isinstance(wrapper, MultiModeInference) and len(evaluators) == 2
    evaluator = evaluators[0]
    assert isinstance(evaluator, MultiModeEvaluator)
    evaluator.reset()
    assert evaluator._evaluators["fc"].name.endswith(os.path.join("inference", "a", "fc"))

    inputs = _inputs(with_targets=False)
    with torch.no_grad():
        outputs = wrapper(inputs)
        expected = {mode: [] for mode in MODES}  # each mode alone, through the usual forward
        for mode in MODES:
            model.roi_heads.test_mode = mode
            expected[mode] = model(inputs)
    # one pass for all modes; alone, each mode runs only the branches it uses
    assert calls == {"backbone": 1 + 4, "fc": 1 + 3, "conv": 1 + 3}

    evaluator.process(inputs, outputs)
    for mode in MODES:
        for output, single in zip(evaluator._evaluators[mode].outputs, expected[mode]):
            assert_instances_allclose(output["instances"], single["instances"])
    assert evaluator.evaluate() == {f"{mode}/bbox": {"AP": 2.0} for mode in MODES}


def test_multi_mode_evaluation_needs_double_head():
    cfg = _cfg(opts=["MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_BOX_HEAD.NUM_FC", 2])
    with pytest.raises(ValueError, match="needs MODEL.ROI_HEADS.NAME 'DoubleHeadROIHeads'"):
        MultiModeInference(build_model(cfg), MODES)


def test_checkpoint_to_default_predictor(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with EventStorage():  # one step moves weights and BN statistics away from their init
        sum(model(_inputs()).values()).backward()
    optimizer.step()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")

    cfg = _cfg(opts=["MODEL.WEIGHTS", str(tmp_path / "model.pth")])
    predictor = DefaultPredictor(cfg)
    reference = model.state_dict()
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, reference[key]), key

    image = np.random.RandomState(0).randint(0, 255, (70, 90, 3)).astype(np.uint8)  # BGR
    resized = predictor.aug.get_transform(image).apply_image(image)
    model.eval()
    with torch.no_grad():
        expected = model([{"image": torch.as_tensor(resized.transpose(2, 0, 1).astype("float32")),
                           "height": 70, "width": 90}])[0]["instances"]  # fmt: skip
    got = predictor(image)["instances"]
    assert len(got) > 0
    assert_instances_allclose(got, expected)


def test_torchscript_tracing():
    model = _model().eval()
    image = _inputs(with_targets=False)[0]["image"]

    def inference(model, image):
        return model.inference([{"image": image}], do_postprocess=False)[0]

    adapter = TracingAdapter(model, image, inference)
    with torch.no_grad():
        traced = torch.jit.trace(adapter, (image,))
        for other in [image, torch.rand(3, 80, 56) * 255]:  # another size than traced
            expected = inference(model, other)
            assert len(expected) > 0
            got = adapter.outputs_schema(traced(other))
            assert_instances_allclose(got, expected, size_as_tensor=True)


@pytest.mark.slow
def test_a_few_iterations_on_shapes_lower_the_loss():
    cfg = _cfg(opts=["INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 160])
    model = _model()
    mapper = DatasetMapper(cfg, is_train=True)
    torch.manual_seed(0)
    batch = [mapper(d) for d in DatasetCatalog.get("shapes_train")[:2]]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    head_losses = []
    with EventStorage():
        for _ in range(12):
            losses = model(batch)
            head_losses.append(sum(v.item() for k, v in losses.items() if "rpn" not in k))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    assert np.mean(head_losses[-3:]) < 0.8 * np.mean(head_losses[:3]), head_losses


@pytest.mark.slow
def test_train_net_eval_only_reports_every_mode(tmp_path, tiny_val):
    """`train_net.py --eval-only` with EVAL_MODES: one inference pass, one AP table per mode
    (on conftest's 5-image tiny_val)."""
    cfg = get_cfg()
    add_common_config(cfg)
    add_doublehead_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/shapes/dh_ext.yaml"))
    cfg.merge_from_list(TINY_OPTS + ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model")
    returncode, log = run_train_net(
        "--config-file", "configs/shapes/dh_ext.yaml", "--eval-only", *tiny_val, *TINY_OPTS,
        "DATASETS.TEST", "('tiny_val',)", "OUTPUT_DIR", str(tmp_path),
        "MODEL.WEIGHTS", str(tmp_path / "model.pth"),
        "MODEL.DOUBLE_HEAD.EVAL_MODES", '["conv","fc","double","fused"]',
    )  # fmt: skip
    assert returncode == 0, log[-3000:]
    assert log.count("Start inference on") == 1, log[-3000:]
    for mode in MODES:
        assert f"Double-Head inference mode '{mode}'" in log
        assert f"copypaste: Task: {mode}/bbox" in log
        assert (tmp_path / "inference" / "tiny_val" / mode / "coco_instances_results.json").exists()
