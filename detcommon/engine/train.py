"""What train_net.py runs: its command line, the Trainer of every YAML config, and `main`.

    args = argument_parser().parse_args()
    detcommon.launch.launch(main, args.num_gpus, num_machines=args.num_machines,
                            machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))

A `.py` config (configs/lazy/) goes to detcommon.engine.lazy with the same hooks.
"""

import os
import weakref

import detectron2.utils.comm as comm
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, hooks

from ..config import build_config
from ..data.mapper import CheckedDatasetMapper
from ..evaluation import PaperCOCOEvaluator, write_eval_results
from ..projects import projects
from . import lazy
from .checkpoint import AtomicCheckpointer, BestCheckpointer
from .defaults import (
    check_amp_device,
    check_weights_for_eval,
    cpu_ddp_without_device_ids,
    setup_run,
)
from .monitor import log_rank_losses
from .preemption import PreemptionHook

__all__ = ["Trainer", "argument_parser", "setup", "main"]


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO evaluation that reports AP50-AP90 (and each project's own
    evaluation, e.g. Double-Head's modes), DDP on CPU workers, crash-safe checkpoints, the best
    evaluation's weights (TEST.BEST_CHECKPOINT_METRIC), a checkpoint and exit code 143 on
    SIGTERM/SIGUSR1 (preemption), and image-reading errors that name the file."""

    def __init__(self, cfg):
        check_amp_device(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE)
        with cpu_ddp_without_device_ids():
            super().__init__(cfg)
        log_rank_losses(self._trainer.model)

    def build_hooks(self):
        # DefaultTrainer builds its checkpointer, then the hooks that save through it.
        self.checkpointer = AtomicCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        ret = super().build_hooks()
        if self.cfg.TEST.BEST_CHECKPOINT_METRIC and comm.is_main_process():
            # Right after the EvalHook: it reads the evaluation just put into the event storage.
            after_eval = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)) + 1
            ret.insert(after_eval, BestCheckpointer(
                self.cfg.TEST.EVAL_PERIOD, self.checkpointer,
                self.cfg.TEST.BEST_CHECKPOINT_METRIC, self.cfg.TEST.BEST_CHECKPOINT_MODE,
            ))  # fmt: skip
        ret.append(PreemptionHook(self.checkpointer))  # last: the iteration's other hooks run first
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return PaperCOCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        if evaluators is None:
            for project in projects():
                own = project.evaluation and project.evaluation(cfg, model, cls.build_evaluator)
                if own is not None:  # e.g. Double-Head: one AP table per mode, heads run once
                    model, evaluators = own
                    break
        return super().test(cfg, model, evaluators)


def argument_parser():
    """Detectron2's default_argument_parser with `--dataset NAME JSON_FILE IMAGE_DIR`."""
    parser = default_argument_parser()
    parser.add_argument(
        "--dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON_FILE", "IMAGE_DIR"),
        help="register a COCO-format detection dataset under NAME (repeatable); "
        "then use NAME in DATASETS.TRAIN / DATASETS.TEST",
    )
    return parser


def setup(args):
    """The frozen config of a YAML run from train_net.py's command line, this process prepared
    for it (detcommon.config.build_config, detcommon.engine.setup_run)."""
    cfg = build_config(args.config_file, args.opts, args.dataset)
    setup_run(cfg, args)
    return cfg


def main(args):
    """One process of train_net.py: --eval-only (eval_results.json), --resume, or training."""
    if lazy.is_lazy_config(args.config_file):
        return lazy.main(args)
    cfg = setup(args)
    if args.eval_only:
        if not args.resume:
            check_weights_for_eval(cfg.MODEL.WEIGHTS)
        model = Trainer.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            write_eval_results(results, os.path.join(cfg.OUTPUT_DIR, "eval_results.json"))
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
