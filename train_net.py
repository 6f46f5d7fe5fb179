#!/usr/bin/env python
"""Trains and evaluates every model of this project: FPN baseline, Double-Head, Decoupled R-CNN.

    python train_net.py --config-file configs/dh_ext_R50_FPN_1x.yaml --num-gpus 4
    python train_net.py --config-file configs/dh_ext_R50_FPN_1x.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/shapes/faster_rcnn.yaml          # CPU, embedded data
    python train_net.py --config-file ... --dataset my_train train.json images/ \
        --dataset my_val val.json images/ DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)'

    torchrun --nproc_per_node 4 train_net.py --config-file configs/dh_ext_R50_FPN_1x.yaml

Without CUDA everything runs on the CPU; `--num-gpus N` (or torchrun) then runs N processes over
gloo. A process that dies stops the others within a minute, exit code 75 (docs/RELIABILITY.md).
SIGTERM or SIGUSR1 during training: a checkpoint of the current iteration, exit code 143; rerun
with --resume (docs/RELIABILITY.md).
"""
import os
import weakref

import detectron2.utils.comm as comm
import torch
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks
from detectron2.utils.logger import setup_logger

from decoupled_rcnn import add_decoupled_rcnn_config
from detcommon import PaperCOCOEvaluator, add_common_config
from detcommon.evaluation import write_eval_results
from detcommon.checkpoint import AtomicCheckpointer, BestCheckpointer
from detcommon.data import CheckedDatasetMapper
from detcommon.engine import check_amp_device, cpu_ddp_without_device_ids, register_datasets
from detcommon.monitor import log_rank_losses
from detcommon.launch import launch
from detcommon.preemption import PreemptionHook
from detcommon.validation import validate_config
from double_head import add_doublehead_config, multi_mode_evaluation


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO evaluation that reports AP50-AP90, DDP on CPU workers, crash-safe
    checkpoints, the best evaluation's weights (TEST.BEST_CHECKPOINT_METRIC), a checkpoint and exit
    code 143 on SIGTERM/SIGUSR1 (preemption), and image-reading errors that name the file."""

    def __init__(self, cfg):
        check_amp_device(cfg)
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
        return build_detection_test_loader(cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return PaperCOCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        if evaluators is None and cfg.MODEL.DOUBLE_HEAD.EVAL_MODES:
            # Double-Head: one AP table per inference mode, heads run once per image.
            model, evaluators = multi_mode_evaluation(cfg, model, cls.build_evaluator)
        return super().test(cfg, model, evaluators)


def argument_parser():
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
    """Builds the frozen config of a run from the command line and checks its datasets."""
    cfg = get_cfg()
    add_common_config(cfg)
    add_doublehead_config(cfg)
    add_decoupled_rcnn_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.DATASETS.REGISTER_COCO = list(cfg.DATASETS.REGISTER_COCO) + [list(d) for d in args.dataset]
    cfg.merge_from_list(args.opts)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    validate_config(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    for package in ("detcommon", "double_head", "decoupled_rcnn"):
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=package)
    register_datasets(cfg)
    return cfg


def check_weights_for_eval(cfg):
    """Refuses empty or missing MODEL.WEIGHTS: evaluating random weights is never meant."""
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise ValueError("--eval-only needs trained weights: pass MODEL.WEIGHTS path/to/model_final.pth")
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS {weights!r} does not exist; nothing to evaluate.")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        if not args.resume:
            check_weights_for_eval(cfg)
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


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
