"""LazyConfig (Python config) runs of train_net.py: the same training, evaluation, resume, hooks
and checks as its YAML path, for the configs under configs/lazy/.

    python train_net.py --config-file configs/lazy/shapes/dh_ext.py train.max_iter=600
    python train_net.py --config-file configs/lazy/dh_ext_R50_FPN_1x.py --num-gpus 4
    python train_net.py --config-file configs/lazy/dh_ext_R50_FPN_1x.py --eval-only \
        train.init_checkpoint=output/dh_ext_R50_FPN_1x/model_final.pth

A config holds Detectron2's five keys: `model`, `dataloader` (`train`, `test`, `evaluator`),
`optimizer`, `lr_multiplier` and `train`; overrides on the command line are `key=value`
(hydra syntax, as Detectron2's lazyconfig_train_net.py takes them), and a key that the config
lacks is refused unless written `+key=value`. The project's YAML keys live here:

    MODEL.WEIGHTS                           train.init_checkpoint
    OUTPUT_DIR, SEED, MODEL.DEVICE          train.output_dir, train.seed, train.device
    SOLVER.MAX_ITER, CHECKPOINT_PERIOD      train.max_iter, train.checkpointer.period
    TEST.EVAL_PERIOD                        train.eval_period
    TEST.BEST_CHECKPOINT_METRIC / _MODE     train.best_checkpoint.metric / .mode
    SOLVER.BASE_LR, IMS_PER_BATCH           optimizer.lr, dataloader.train.total_batch_size
    SOLVER.STEPS, WARMUP_ITERS, _FACTOR     lr_multiplier.steps, .warmup_iters, .warmup_factor
    DATASETS.TRAIN / TEST                   dataloader.train.dataset.names / dataloader.test.dataset.names
    DATASETS.REGISTER_COCO (--dataset)      dataloader.register_coco
    DATASETS.SHAPES_ROOT                    dataloader.shapes_root
    DATALOADER.SKIP_BAD_IMAGES              dataloader.train.mapper.skip_bad_images

A project's own keys are constructor arguments of the model's modules (configs/lazy/common/models/);
the project's `lazy` module lists them. Before anything is built, :func:`validate_lazy_config`
runs the YAML path's checks (detcommon.config.validate_config with the projects' config checks,
then each project's `check_lazy_node` on every node of `model`) on the values of the lazy config,
their messages naming the lazy keys (:func:`lazy_keys`). Projects hook in through
detcommon.projects: this module names none of them.

Also here: the callables the lazy configs instantiate where the YAML path derives a value in
code (the learning-rate schedule, the seeded training sampler); a project's own are in its
`lazy` module.
"""

import contextlib
import copy
import logging
import os
import re
from collections import OrderedDict

import detectron2.utils.comm as comm
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_setup,
    default_writers,
    defaults,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver import WarmupParamScheduler
from detectron2.utils.logger import setup_logger
from detectron2.utils.registry import locate
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config import get_project_cfg, validate_config
from ..data.datasets import register_datasets
from ..evaluation import write_eval_results
from ..projects import package_names, projects
from .checkpoint import AtomicCheckpointer, BestCheckpointer, CheckpointReadError
from .defaults import check_amp_device, check_weights_for_eval, cpu_ddp_without_device_ids
from .monitor import log_rank_losses
from .preemption import PreemptionHook

__all__ = [
    "is_lazy_config",
    "load_config",
    "validate_lazy_config",
    "register_lazy_datasets",
    "setup",
    "build_model",
    "build_optimizer",
    "test",
    "train",
    "main",
    "multistep_lr_multiplier",
    "build_train_loader",
    "lazy_keys",
    "translate_keys",
    "plain_value",
    "node_target",
]

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("model", "dataloader", "optimizer", "lr_multiplier", "train")


# ---- callables the lazy configs instantiate ----------------------------------------------------


def multistep_lr_multiplier(
    *, steps, max_iter, warmup_iters=1000, warmup_factor=0.001, warmup_method="linear", gamma=0.1,
    rescale_interval=False,
):  # fmt: skip
    """The lr multiplier of the YAML path's WarmupMultiStepLR (detectron2.solver.build_lr_scheduler),
    a ParamScheduler of where = iteration / max_iter: x gamma at each of `steps` (those beyond
    `max_iter` dropped, with the same warning), after a warm-up over `warmup_iters` iterations
    from `warmup_factor`. The configs pass max_iter "${train.max_iter}", so overriding
    train.max_iter keeps the steps and the warm-up in iterations, as SOLVER.MAX_ITER does."""
    kept = [s for s in steps if s <= max_iter]
    if len(kept) != len(steps):
        logger.warning(
            f"lr_multiplier.steps {list(steps)} has values beyond train.max_iter {max_iter}: ignored"
        )
    scheduler = MultiStepParamScheduler(
        values=[gamma**k for k in range(len(kept) + 1)], milestones=kept, num_updates=max_iter
    )
    return WarmupParamScheduler(
        scheduler, warmup_factor, min(warmup_iters / max_iter, 1.0), warmup_method, rescale_interval
    )


def build_train_loader(
    dataset, *, mapper, total_batch_size, seed=-1, aspect_ratio_grouping=True, num_workers=0
):
    """Detectron2's build_detection_train_loader with the YAML path's sampler,
    TrainingSampler(len(dataset), seed=seed): the configs pass seed "${train.seed}" (SEED), so a
    seeded lazy run draws the images in the order of its YAML twin."""
    logger.info("Using training sampler TrainingSampler")
    return build_detection_train_loader(
        dataset,
        mapper=mapper,
        sampler=TrainingSampler(len(dataset), seed=seed),
        total_batch_size=total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
    )


# ---- loading and checks ----------------------------------------------------------------------


def is_lazy_config(config_file):
    """Whether train_net.py runs `config_file` as a LazyConfig: a Python file."""
    return config_file.endswith(".py")


def load_config(config_file, overrides=(), datasets=()):
    """The LazyConfig of `config_file`, `datasets` ([NAME, JSON_FILE, IMAGE_DIR], from --dataset)
    appended to dataloader.register_coco, then `overrides` ("key=value") applied."""
    cfg = LazyConfig.load(config_file)
    missing = [k for k in TOP_LEVEL_KEYS if k not in cfg]
    if missing:
        raise ValueError(
            f"LazyConfig {config_file} lacks {missing}: a config for train_net.py defines {list(TOP_LEVEL_KEYS)}, "
            "e.g. by importing them as configs/lazy/faster_rcnn_R50_FPN_1x.py does"
        )
    given = list(plain_value(cfg.dataloader.get("register_coco", [])))
    cfg.dataloader.register_coco = given + [list(d) for d in datasets]
    _check_overrides(cfg, overrides, config_file)
    return LazyConfig.apply_overrides(cfg, list(overrides))


_NO_VALUE = object()


def _check_overrides(cfg, overrides, config_file):
    """Refuses YAML-style options and keys the config lacks (a typo would otherwise add a key)."""
    for opt in overrides:
        key = opt.split("=", 1)[0]
        if "=" not in opt or not key:
            raise ValueError(
                f"Override {opt!r}: a LazyConfig (.py) takes key=value overrides, e.g. train.max_iter=4 "
                "(YAML-style `KEY VALUE` pairs are for .yaml configs)"
            )
        if key.startswith("+"):
            continue  # hydra's syntax for a key to add
        if OmegaConf.select(cfg, key, default=_NO_VALUE, throw_on_missing=False) is _NO_VALUE:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
            known = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else None
            raise KeyError(
                f"Override {opt!r}: {config_file} has no key {key!r}"
                + (f" ({parent or 'the config'} has {known})" if known is not None else "")
                + f". Fix the key, or write +{opt} to add it."
            )


def plain_value(value):
    """`value` with OmegaConf containers as Python lists and dicts, interpolations resolved (other
    values as they are)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _names(names):
    """A dataset's `names` as a list ("" or None: none)."""
    names = plain_value(names)
    if not names:
        return []
    return [names] if isinstance(names, str) else list(names)


def node_target(node):
    """The callable a LazyCall node makes (its `_target_`, located if a string); None for a value
    that is no LazyCall node."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    target = node._target_
    return locate(target) if isinstance(target, str) else target


def _target_name(node):
    target = node_target(node)
    return getattr(target, "__name__", str(target)) if target is not None else ""


def _lazy_nodes(node, path):
    """(path, node) of every LazyCall node under `node` (at `path`), interpolations not followed."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        keys = [k for k in node.keys() if not OmegaConf.is_interpolation(node, k)]
    elif isinstance(node, ListConfig):
        keys = [i for i in range(len(node)) if not OmegaConf.is_interpolation(node, i)]
    else:
        return
    for k in keys:
        yield from _lazy_nodes(node[k], f"{path}.{k}")


def translate_keys(text, keys):
    """`text` (an error message of a YAML-path check) with each YAML key of `keys` ({YAML key: lazy
    key}) written as its LazyConfig key, the longest keys first; a quoted fix `KEY VALUE` becomes
    `key=VALUE`, as the command line takes it."""
    for yaml_key, lazy_key in sorted(keys.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(
            rf"`{re.escape(yaml_key)} ([^`]*)`", lambda m: f"`{lazy_key}={m.group(1)}`", text
        )
        text = re.sub(rf"(?<![\w.]){re.escape(yaml_key)}(?!\w)", lambda m: lazy_key, text)
    return text


@contextlib.contextmanager
def lazy_keys(keys):
    """Context manager for running a YAML-path check (or building modules) on a lazy config's
    values: a ValueError or CheckpointReadError raised inside is raised again, of the same type
    where it can be, with its message's YAML keys written as `keys`'s lazy keys
    (:func:`translate_keys`); an error naming none of them passes unchanged.

    Args:
        keys (dict[str, str]): YAML key (e.g. "TEST.EVAL_PERIOD") -> lazy key ("train.eval_period").
    """
    try:
        yield
    except (ValueError, CheckpointReadError) as e:
        text = translate_keys(str(e), keys)
        if text == str(e):
            raise
        try:
            error = type(e)(text)
        except Exception:
            error = ValueError(text)
        raise error from e


# The YAML path's keys of the shared checks and their LazyConfig keys, for messages.
_SHARED_KEYS = {
    "DATASETS.REGISTER_COCO": "dataloader.register_coco",
    "DATASETS.SHAPES_ROOT": "dataloader.shapes_root",
    "DATASETS.TRAIN": "dataloader.train.dataset.names",
    "DATASETS.TEST": "dataloader.test.dataset.names",
    "DATALOADER.SKIP_BAD_IMAGES": "dataloader.train.mapper.skip_bad_images",
    "TEST.BEST_CHECKPOINT_METRIC": "train.best_checkpoint.metric",
    "TEST.BEST_CHECKPOINT_MODE": "train.best_checkpoint.mode",
    "TEST.EVAL_PERIOD": "train.eval_period",
    "MODEL.ROI_HEADS.NUM_CLASSES": "model.roi_heads.num_classes",
    "MODEL.ROI_HEADS.NAME": "model.roi_heads",
    "MODEL.PROPOSAL_GENERATOR.NAME": "model.proposal_generator",
    "MODEL.WEIGHTS": "train.init_checkpoint",
}


def _shared_view(cfg):
    """A YAML config holding the lazy config's values of the keys detcommon.config.validate_config and
    detcommon.data.datasets.register_datasets read."""
    view = get_project_cfg()
    best = cfg.train.get("best_checkpoint", {})
    view.DATASETS.REGISTER_COCO = plain_value(cfg.dataloader.get("register_coco", []))
    view.DATASETS.SHAPES_ROOT = cfg.dataloader.get("shapes_root", "")
    view.DATASETS.TRAIN = _names(cfg.dataloader.train.dataset.names)
    view.DATASETS.TEST = _names(cfg.dataloader.test.dataset.names)
    view.DATALOADER.SKIP_BAD_IMAGES = cfg.dataloader.train.mapper.get("skip_bad_images", False)
    view.TEST.BEST_CHECKPOINT_METRIC = best.get("metric", "")
    view.TEST.BEST_CHECKPOINT_MODE = best.get("mode", "max")
    view.TEST.EVAL_PERIOD = cfg.train.eval_period
    view.MODEL.ROI_HEADS.NAME = _target_name(cfg.model.get("roi_heads"))
    view.MODEL.PROPOSAL_GENERATOR.NAME = _target_name(cfg.model.get("proposal_generator"))
    view.MODEL.ROI_HEADS.NUM_CLASSES = OmegaConf.select(
        cfg, "model.roi_heads.num_classes", default=0
    )
    # A lazy config names its box heads' classes, not registry names: the registry check of
    # validate_config has nothing to check (the view keeps registered names).
    view.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    return view


def _check_model_nodes(cfg):
    """Each project's `check_lazy_node` on every LazyCall node of cfg.model; returns the shared
    keys and every {YAML key: lazy key} the projects gave for their nodes."""
    keys = dict(_SHARED_KEYS)
    checks = [p.check_lazy_node for p in projects() if p.check_lazy_node is not None]
    for path, node in _lazy_nodes(cfg.model, "model"):
        for check in checks:
            keys.update(check(path, node, cfg.model) or {})
    return keys


def validate_lazy_config(cfg):
    """The YAML path's config checks on a LazyConfig, before any dataset is read or model built:
    detcommon.config.validate_config (datasets to register, shapes root, bad images, best
    checkpoint, the projects' config checks, e.g. which RPN goes with which RoI heads), then
    each project's `check_lazy_node` on every node of cfg.model. Raises ValueError naming the
    lazy key."""
    with lazy_keys(_SHARED_KEYS):
        validate_config(_shared_view(cfg))
    _check_model_nodes(cfg)


def register_lazy_datasets(cfg):
    """detcommon.data.datasets.register_datasets for a LazyConfig: shapes (dataloader.shapes_root) and
    dataloader.register_coco registered, the train and test datasets checked, their classes
    against model.roi_heads.num_classes."""
    with lazy_keys(_SHARED_KEYS):
        register_datasets(_shared_view(cfg))


def setup(args):
    """The LazyConfig of a run from the command line, checked; logging, config.yaml and the
    datasets set up as train_net.py's setup() does for a YAML config."""
    cfg = load_config(args.config_file, args.opts, datasets=getattr(args, "dataset", ()))
    if not torch.cuda.is_available():
        cfg.train.device = "cpu"
    validate_lazy_config(cfg)
    if not args.eval_only:
        check_amp_device(cfg.train.amp.enabled, cfg.train.device, "train.amp.enabled")
    default_setup(cfg, args)
    for package in package_names():
        setup_logger(output=cfg.train.output_dir, distributed_rank=comm.get_rank(), name=package)
    register_lazy_datasets(cfg)
    return cfg


# ---- building, evaluation and training -------------------------------------------------------


def build_model(cfg):
    """cfg.model instantiated on train.device, after the projects' node checks; errors of the
    modules' own checks name lazy keys (the keys the projects' `check_lazy_node` gave)."""
    with lazy_keys(_check_model_nodes(cfg)):
        model = instantiate(cfg.model)
    model.to(torch.device(cfg.train.device))
    logger.info(f"Model:\n{model}")
    return model


def build_optimizer(cfg, model):
    """cfg.optimizer instantiated for `model`'s parameters (cfg itself is left as it is)."""
    optimizer = copy.deepcopy(cfg.optimizer)
    optimizer.params.model = model
    return instantiate(optimizer)


def _evaluation(model, build_evaluator):
    """(model, evaluator) of one dataset: the first project's `lazy_evaluation` that is not None,
    else `model` with the dataset's evaluator."""
    for project in projects():
        if project.lazy_evaluation is not None:
            taken = project.lazy_evaluation(model, build_evaluator)
            if taken is not None:
                return taken
    return model, build_evaluator()


def test(cfg, model):
    """Evaluates `model` on each dataset of dataloader.test.dataset.names on its own, with
    dataloader.evaluator writing to train.output_dir/inference/<dataset>, as the YAML path's
    Trainer.test. The first project whose `lazy_evaluation` takes the model (e.g. several
    inference modes in one pass, each under <dataset>/<mode>) evaluates it instead. Returns
    {task: {column: value}} for one dataset, {dataset: {...}} for several, {} for none."""
    results = OrderedDict()
    names = _names(cfg.dataloader.test.dataset.names)
    for name in names:
        loader = copy.deepcopy(cfg.dataloader.test)
        loader.dataset.names = name
        evaluator = copy.deepcopy(cfg.dataloader.evaluator)
        evaluator.dataset_name = name
        output_dir = evaluator.get("output_dir") or os.path.join(
            cfg.train.output_dir, "inference", name
        )

        def build_evaluator(mode=None, evaluator=evaluator, output_dir=output_dir):
            evaluator = copy.deepcopy(evaluator)
            evaluator.output_dir = os.path.join(output_dir, mode) if mode else output_dir
            return instantiate(evaluator)

        data_loader = instantiate(loader)  # first: the evaluator reads the dataset's json file
        evaluated, dataset_evaluator = _evaluation(model, build_evaluator)
        results[name] = inference_on_dataset(evaluated, data_loader, dataset_evaluator)
        if comm.is_main_process():
            logger.info(f"Evaluation results for {name} in csv format:")
            print_csv_format(results[name])
    return results[names[0]] if len(results) == 1 else results


class _DefaultTrainerState:
    """The trainer as the checkpointer's "trainer": its state in DefaultTrainer's layout (optimizer
    and AMP grad scaler under "_trainer"), so that a LazyConfig run and its YAML twin, which
    share train.output_dir / OUTPUT_DIR, resume from each other's checkpoints."""

    _INNER = ("optimizer", "grad_scaler")

    def __init__(self, trainer):
        self.trainer = trainer

    def state_dict(self):
        state = self.trainer.state_dict()
        inner = {
            "iteration": state["iteration"],
            **{k: state.pop(k) for k in self._INNER if k in state},
        }
        return {**state, "_trainer": inner}

    def load_state_dict(self, state):
        state = dict(state)
        inner = state.pop("_trainer", {})
        state.update({k: v for k, v in inner.items() if k in self._INNER})
        self.trainer.load_state_dict(state)


def train(cfg, resume=False):
    """Trains cfg.model as the YAML path's Trainer does: Detectron2's SimpleTrainer (AMPTrainer
    with train.amp.enabled), DDP also on CPU workers, the per-rank loss log, and the hooks of
    DefaultTrainer with the project's: AtomicCheckpointer (periodic, atomic), evaluation every
    train.eval_period and at the end, BestCheckpointer (train.best_checkpoint.metric), writers,
    PreemptionHook last. `resume`: continue from the last checkpoint of train.output_dir.
    Returns the last evaluation's results (None without evaluation)."""
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    data_loader = instantiate(cfg.dataloader.train)
    with cpu_ddp_without_device_ids():
        model = defaults.create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(
        model, data_loader, optimizer
    )
    log_rank_losses(trainer.model)
    checkpointer = AtomicCheckpointer(
        model, cfg.train.output_dir, trainer=_DefaultTrainerState(trainer)
    )

    def test_and_save_results():
        trainer._last_eval_results = test(cfg, trainer.model)
        return trainer._last_eval_results

    main_process = comm.is_main_process()
    best = cfg.train.get("best_checkpoint", {})
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process else None,
        hooks.EvalHook(cfg.train.eval_period, test_and_save_results),
        # right after the EvalHook: it reads the evaluation just put into the event storage
        BestCheckpointer(cfg.train.eval_period, checkpointer, best.metric, best.get("mode", "max"))
        if best.get("metric") and main_process else None,
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if main_process else None,
        PreemptionHook(checkpointer),  # last: the iteration's other hooks run first
    ])  # fmt: skip
    with lazy_keys(_SHARED_KEYS):
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return getattr(trainer, "_last_eval_results", None)


def main(args):
    """train_net.py's main() for a LazyConfig: --eval-only (eval_results.json), --resume, training."""
    cfg = setup(args)
    if args.eval_only:
        if not args.resume:
            check_weights_for_eval(cfg.train.init_checkpoint, "train.init_checkpoint")
        model = build_model(cfg)
        with lazy_keys(_SHARED_KEYS):
            AtomicCheckpointer(model, save_dir=cfg.train.output_dir).resume_or_load(
                cfg.train.init_checkpoint, resume=args.resume
            )
        results = test(cfg, model)
        if comm.is_main_process():
            write_eval_results(results, os.path.join(cfg.train.output_dir, "eval_results.json"))
        return results
    return train(cfg, resume=args.resume)
