"""The LazyConfig twins of the YAML configs (configs/lazy/): the same model (parameters, buffers,
every module's settings), optimizer, schedule and data as the YAML twin; the same detections
and losses with the same weights; the same checks, naming lazy keys; and train_net.py's lazy path
end to end (train with evaluation and best checkpoint, --resume, --eval-only)."""

import inspect
import json
import os

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from tests.conftest import REPO, run_train_net

COCO = [
    "faster_rcnn_R50_FPN_1x", "dh_faster_rcnn_R50_FPN_1x", "dh_R50_FPN_1x", "dh_ext_R50_FPN_1x", "dh_ext_R101_FPN_1x",
    "drcnn_faster_rcnn_R50_FPN_1x", "drcnn_R50_FPN_1x", "drcnn_cascade_R50_FPN_1x", "drcnn_cascade_R50_FPN_2x",
    "drcnn_cascade_R101_FPN_2x", "drcnn_dh_R50_FPN_1x",
]  # fmt: skip
SHAPES = [
    f"shapes/{name}"
    for name in ("faster_rcnn", "dh", "dh_ext", "drcnn", "drcnn_cascade", "drcnn_dh")
]

# train_net.py's TINY_OPTS (conftest.py) as lazy overrides.
LAZY_TINY = [
    'train.init_checkpoint=""',
    "dataloader.train.total_batch_size=2",
    "train.max_iter=4",
    "lr_multiplier.warmup_iters=2",
    "lr_multiplier.steps=[]",
    "train.checkpointer.period=2",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
    "dataloader.train.mapper.augmentations.0.max_size=192",
    "dataloader.test.mapper.augmentations.0.short_edge_length=128",
    "dataloader.test.mapper.augmentations.0.max_size=192",
    "model.proposal_generator.post_nms_topk=[64,64]",
    "model.roi_heads.batch_size_per_image=32",
    "model.roi_heads.box_predictors.fc.test_topk_per_image=20",
    "dataloader.train.num_workers=0",
]


def yaml_cfg(name):
    """The YAML twin's config as train_net.py's setup() builds it, on the CPU."""
    from decoupled_rcnn import add_decoupled_rcnn_config
    from detcommon import add_common_config
    from detcommon.config import validate_config
    from double_head import add_doublehead_config

    cfg = get_cfg()
    add_common_config(cfg)
    add_doublehead_config(cfg)
    add_decoupled_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    validate_config(cfg)
    return cfg


def lazy_cfg(name, overrides=()):
    """The lazy twin's config as train_net.py's lazy setup() loads and checks it, on the CPU."""
    from detcommon.engine.lazy import load_config, validate_lazy_config

    cfg = load_config(os.path.join(REPO, "configs", "lazy", f"{name}.py"), overrides)
    cfg.train.device = "cpu"
    validate_lazy_config(cfg)
    return cfg


def build_twins(name, seed=0):
    """(YAML model, lazy model), each built after torch.manual_seed(seed)."""
    from detcommon.engine.lazy import build_model as build_lazy_model

    torch.manual_seed(seed)
    yaml_model = build_model(yaml_cfg(name))
    torch.manual_seed(seed)
    return yaml_model, build_lazy_model(lazy_cfg(name))


_MODULE_INTERNALS = set(vars(nn.Module())) | {"training"}


def plain(value):
    """A module attribute as comparable plain values (objects by their attributes)."""
    if isinstance(value, nn.Module):
        return type(value).__name__
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.tolist() if value.numel() <= 64 else None)
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if inspect.isroutine(value) or isinstance(value, type):
        return f"<{getattr(value, '__qualname__', repr(value))}>"
    if hasattr(value, "__dict__"):
        return {"type": type(value).__name__, **plain(vars(value))}
    return repr(value)


def settings(model):
    """Module name -> its own attributes (settings from from_config or the lazy arguments)."""
    return {
        name: {k: plain(v) for k, v in vars(m).items() if k not in _MODULE_INTERNALS}
        for name, m in model.named_modules()
    }


def param_groups(optimizer, model):
    """The optimizer's groups as (hyperparameters, parameter names), sorted."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in optimizer.param_groups:
        hyper = tuple(sorted((k, v) for k, v in g.items() if k != "params"))
        groups.append((hyper, sorted(names[id(p)] for p in g["params"])))
    return sorted(groups)


def _count(model, trainable=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def _shapes(model):
    return {k: v.shape for k, v in model.state_dict().items()}


def _frozen(model):
    return sorted(n for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("name", COCO + SHAPES)
def test_twin_builds_the_yaml_model_and_optimizer(name):
    from detcommon.engine.lazy import build_optimizer as build_lazy_optimizer

    yaml_model, lazy_model = build_twins(name)
    for trainable in (False, True):
        assert _count(lazy_model, trainable) == _count(yaml_model, trainable)
    assert _shapes(lazy_model) == _shapes(yaml_model)
    assert _frozen(lazy_model) == _frozen(yaml_model)
    yaml_buffers, lazy_buffers = dict(yaml_model.named_buffers()), dict(lazy_model.named_buffers())
    assert (
        lazy_buffers.keys() == yaml_buffers.keys()
    )  # anchors and pixel mean too (not in state_dict)
    assert all(torch.equal(lazy_buffers[k], yaml_buffers[k]) for k in yaml_buffers)
    yaml_settings, lazy_settings = settings(yaml_model), settings(lazy_model)
    assert lazy_settings.keys() == yaml_settings.keys()
    for module in yaml_settings:
        assert lazy_settings[module] == yaml_settings[module], module

    cfg, lazy = yaml_cfg(name), lazy_cfg(name)
    yaml_optimizer, lazy_optimizer = (
        build_optimizer(cfg, yaml_model),
        build_lazy_optimizer(lazy, lazy_model),
    )
    assert type(lazy_optimizer) is type(yaml_optimizer)
    assert param_groups(lazy_optimizer, lazy_model) == param_groups(yaml_optimizer, yaml_model)


@pytest.mark.parametrize("name", COCO + SHAPES)
def test_twin_has_the_yaml_solver_schedule_and_data(name):
    from detcommon.data.mapper import CheckedDatasetMapper
    from detcommon.evaluation import PaperCOCOEvaluator

    cfg, lazy = yaml_cfg(name), lazy_cfg(name)
    assert set(lazy.keys()) == {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
    s, train, loader = cfg.SOLVER, lazy.train, lazy.dataloader
    optimizer, params = lazy.optimizer, lazy.optimizer.params
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (
        s.BASE_LR,
        s.MOMENTUM,
        s.WEIGHT_DECAY,
    )
    assert (params.bias_lr_factor, params.weight_decay_bias, params.weight_decay_norm) == (
        s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS, s.WEIGHT_DECAY_NORM
    )  # fmt: skip
    assert train.max_iter == s.MAX_ITER and tuple(lazy.lr_multiplier.steps) == s.STEPS
    assert (lazy.lr_multiplier.warmup_iters, lazy.lr_multiplier.warmup_factor) == (
        s.WARMUP_ITERS,
        s.WARMUP_FACTOR,
    )
    # the multiplier itself, at the iterations around each change
    yaml_sched = build_lr_scheduler(
        cfg, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    )._multiplier
    lazy_sched = instantiate(lazy.lr_multiplier)
    for it in sorted(
        {0, 1, s.MAX_ITER - 1}
        | {max(0, x + d) for x in (s.WARMUP_ITERS, *s.STEPS) for d in (-1, 0, 1)}
    ):
        assert lazy_sched(it / train.max_iter) == yaml_sched(it / s.MAX_ITER), it
    assert (
        loader.train.total_batch_size == s.IMS_PER_BATCH
        and train.checkpointer.period == s.CHECKPOINT_PERIOD
    )
    assert (train.init_checkpoint, train.output_dir, train.seed) == (
        cfg.MODEL.WEIGHTS,
        cfg.OUTPUT_DIR,
        cfg.SEED,
    )
    assert (train.eval_period, train.amp.enabled) == (cfg.TEST.EVAL_PERIOD, s.AMP.ENABLED)
    assert list(loader.train.dataset.names) == list(cfg.DATASETS.TRAIN)
    assert list(loader.test.dataset.names) == list(cfg.DATASETS.TEST)
    assert loader.train.dataset.filter_empty == cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    assert (loader.train.num_workers, loader.test.num_workers) == (cfg.DATALOADER.NUM_WORKERS,) * 2
    assert loader.train.aspect_ratio_grouping == cfg.DATALOADER.ASPECT_RATIO_GROUPING
    # input sizes, flip, format: the instantiated mappers against the YAML path's
    for is_train, node in ((True, loader.train.mapper), (False, loader.test.mapper)):
        mapper = instantiate(node)
        assert plain(vars(mapper)) == plain(vars(CheckedDatasetMapper(cfg, is_train=is_train))), (
            is_train
        )
    assert lazy.dataloader.evaluator._target_ is PaperCOCOEvaluator
    # test thresholds, wherever the model's modules take them
    thresholds = {"test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                  "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                  "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE}  # fmt: skip
    found = {}
    for path, key in _keys(OmegaConf.to_container(lazy.model, resolve=True), "model"):
        if key in thresholds:
            found[path] = OmegaConf.select(lazy, path)
            assert found[path] == thresholds[key], path
    assert len(found) >= 3


def _keys(node, path):
    """(dotted path, key) of every dict key under `node`."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        yield f"{path}.{k}", k
        yield from _keys(v, f"{path}.{k}")


def test_fpn_baseline_twin_initialises_the_yaml_weights():
    """Same seed, same random initial weights: a lazy FPN baseline run is its YAML run."""
    for name in ("shapes/faster_rcnn", "faster_rcnn_R50_FPN_1x"):
        yaml_model, lazy_model = build_twins(name, seed=3)
        yaml_state, lazy_state = yaml_model.state_dict(), lazy_model.state_dict()
        assert all(torch.equal(lazy_state[k], yaml_state[k]) for k in yaml_state), name


@pytest.fixture(scope="module")
def shapes_sample():
    """The first shapes_val image (BGR, CHW) and its ground truth."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    import detcommon  # noqa: F401  registers the shapes datasets

    record = DatasetCatalog.get("shapes_val")[0]
    image = torch.as_tensor(
        read_image(record["file_name"], format="BGR").transpose(2, 0, 1).copy()
    ).float()
    boxes = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]
    ]
    gt = Instances(image.shape[1:], gt_boxes=Boxes(torch.tensor(boxes)),
                   gt_classes=torch.tensor([a["category_id"] for a in record["annotations"]]))  # fmt: skip
    return {"image": image, "height": image.shape[1], "width": image.shape[2], "instances": gt}


@pytest.mark.parametrize("name", SHAPES)
def test_shapes_twin_detects_and_trains_as_the_yaml_model(name, shapes_sample):
    """With the YAML model's weights: the same detections, and the same training losses."""
    yaml_model, lazy_model = build_twins(name)
    lazy_model.load_state_dict(yaml_model.state_dict())
    outputs = []
    for model in (yaml_model, lazy_model):
        model.eval()
        with torch.no_grad():
            torch.manual_seed(0)
            outputs.append(model([shapes_sample])[0]["instances"])
    expected, got = outputs
    assert len(expected) > 0 and len(got) == len(expected)
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-5)
    assert torch.equal(got.pred_classes, expected.pred_classes)
    losses = []
    for model in (yaml_model, lazy_model):
        model.train()
        torch.manual_seed(0)
        with EventStorage():
            losses.append({k: v.item() for k, v in model([shapes_sample]).items()})
    assert losses[1].keys() == losses[0].keys()
    assert losses[1] == pytest.approx(losses[0], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("shapes/drcnn", "model.proposal_generator.nms_thresh_reg=0.6",
         "model.proposal_generator.nms_thresh_reg (0.6) must not be below model.proposal_generator.nms_thresh (0.7)"),
        ("shapes/drcnn_cascade", "model.roi_heads.test_class_boxes=per_class",
         "model.roi_heads.test_class_boxes 'per_class' outputs the class-specific first stage's boxes, but "
         "model.roi_heads.test_stage 3"),
        ("shapes/dh_ext", "model.roi_heads.box_heads.conv.nonlocal_dim=130",
         "model.roi_heads.box_heads.conv.nonlocal_dim (130) must be a multiple of "
         "model.roi_heads.box_heads.conv.nonlocal_groups (4)"),
        ("shapes/dh_ext", "model.roi_heads.box_predictors.conv.loss_weight.lambda_conv=1.0",
         "model.roi_heads.test_mode='fused' uses the conv branch's classifier, which is never trained"),
        ("shapes/dh", "model.roi_heads.box_predictors.fc.loss_weight.lambda_fc=1.5",
         "model.roi_heads.box_predictors.fc.loss_weight.lambda_fc must be in [0, 1], got 1.5"),
        ("shapes/faster_rcnn", "train.best_checkpoint.metric=AP",
         "train.best_checkpoint.metric must name an evaluation result as TASK/COLUMN"),
        ("shapes/faster_rcnn", "dataloader.register_coco=[[mine,only_two]]",
         "dataloader.register_coco[0] must be [NAME, JSON_FILE, IMAGE_DIR]"),
    ],
)  # fmt: skip
def test_lazy_checks_are_the_yaml_checks_naming_lazy_keys(name, override, message):
    with pytest.raises(ValueError) as info:
        lazy_cfg(name, [override])
    assert message in str(info.value)


def test_lazy_overrides_and_datasets_are_checked():
    from detcommon.engine import check_weights_for_eval
    from detcommon.engine.lazy import register_lazy_datasets

    with pytest.raises(KeyError, match=r"no key 'train.max_iters'.*\+train.max_iters=4"):
        lazy_cfg("shapes/faster_rcnn", ["train.max_iters=4"])
    with pytest.raises(ValueError, match="takes key=value overrides"):
        lazy_cfg("shapes/faster_rcnn", ["SOLVER.MAX_ITER", "4"])
    assert lazy_cfg("shapes/faster_rcnn", ["+train.note=x"]).train.note == "x"
    classes = (
        r"has 5 classes but model.roi_heads.num_classes is 3: add `model.roi_heads.num_classes=5`"
    )
    with pytest.raises(ValueError, match=classes):
        register_lazy_datasets(lazy_cfg("shapes/faster_rcnn", ["model.roi_heads.num_classes=3"]))
    with pytest.raises(
        ValueError, match=r"dataloader.test.dataset.names names 'nowhere', which is not registered"
    ):
        register_lazy_datasets(
            lazy_cfg("shapes/faster_rcnn", ["dataloader.test.dataset.names=[nowhere]"])
        )
    with pytest.raises(
        ValueError, match=r"--eval-only needs trained weights: pass train.init_checkpoint="
    ):
        check_weights_for_eval("", "train.init_checkpoint")
    with pytest.raises(FileNotFoundError, match="does not exist; nothing to evaluate"):
        check_weights_for_eval("/nonexistent/model_final.pth", "train.init_checkpoint")


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_train_resume_and_eval_only_through_the_lazy_path(tmp_path, tiny_val):
    """train_net.py --config-file configs/lazy/shapes/dh_ext.py: a 4-iteration run evaluated at
    iterations 2 and 4 with a best checkpoint, continued by --resume, evaluated by --eval-only."""
    out = str(tmp_path / "run")
    data = [
        *tiny_val,
        "dataloader.train.dataset.names=[tiny_val]",
        "dataloader.test.dataset.names=[tiny_val]",
    ]
    config = ["--config-file", "configs/lazy/shapes/dh_ext.py"]
    code, log = run_train_net(
        *config, *data, *LAZY_TINY, "train.eval_period=2", "train.best_checkpoint.metric=bbox/AP50",
        f"train.output_dir={out}",
    )  # fmt: skip
    assert code == 0, log[-3000:]
    assert (
        "Starting training from iteration 0" in log
        and "Box AP with the Decoupled R-CNN paper's columns" in log
    )
    for name in (
        "model_0000001.pth",
        "model_0000003.pth",
        "model_final.pth",
        "model_best.pth",
        "config.yaml",
    ):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    saved = LazyConfig.load(os.path.join(out, "config.yaml"))  # the run's full config, as given
    assert saved.train.max_iter == 4 and list(saved.dataloader.register_coco) == [
        list(tiny_val[1:])
    ]
    checkpoint = torch.load(
        os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False
    )
    assert (
        checkpoint["iteration"] == 3 and "optimizer" in checkpoint["trainer"]["_trainer"]
    )  # DefaultTrainer's layout
    rows = _metrics(out)
    losses = [r for r in rows if "total_loss" in r]
    assert losses[-1]["iteration"] == 3
    for key in (
        "loss_cls_fc",
        "loss_box_reg_fc",
        "loss_cls_conv",
        "loss_box_reg_conv",
        "loss_rpn_cls",
    ):
        assert key in losses[-1]
    assert [r["iteration"] for r in rows if "bbox/AP50" in r] == [
        1,
        4,
    ]  # after iteration 1 and at the end

    code, log = run_train_net(
        *config, "--resume", *data, *LAZY_TINY, "train.max_iter=6", f"train.output_dir={out}"
    )
    assert code == 0, log[-3000:]
    assert "Starting training from iteration 4" in log
    assert max(r["iteration"] for r in _metrics(out) if "total_loss" in r) == 5

    code, log = run_train_net(
        *config, "--eval-only", *data, *LAZY_TINY, f"train.init_checkpoint={out}/model_final.pth",
        "model.roi_heads.eval_modes=[double,fused]", f"train.output_dir={out}/eval",
    )  # fmt: skip
    assert code == 0, log[-3000:]
    with open(os.path.join(out, "eval", "eval_results.json")) as f:
        results = json.load(f)
    assert set(results) == {"double/bbox", "fused/bbox"}
    for columns in results.values():
        assert {"AP", "AP50", "AP60", "AP70", "AP75", "AP80", "AP90"} <= set(columns)
    for mode in ("double", "fused"):
        assert os.path.isdir(os.path.join(out, "eval", "inference", "tiny_val", mode))
