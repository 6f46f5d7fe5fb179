#!/usr/bin/env python
"""Trains and evaluates every model of this project: FPN baseline, Double-Head, Decoupled R-CNN.

    python train_net.py --config-file configs/dh_ext_R50_FPN_1x.yaml --num-gpus 4
    python train_net.py --config-file configs/dh_ext_R50_FPN_1x.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/shapes/faster_rcnn.yaml          # CPU, embedded data
    python train_net.py --config-file ... --dataset my_train train.json images/ \
        --dataset my_val val.json images/ DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)'

    torchrun --nproc_per_node 4 train_net.py --config-file configs/dh_ext_R50_FPN_1x.yaml

A Python LazyConfig (configs/lazy/, same models and values) runs the same way, with Detectron2's
key=value overrides (detcommon/engine/lazy.py). The code is in detcommon.engine.train:

    python train_net.py --config-file configs/lazy/dh_ext_R50_FPN_1x.py --num-gpus 4 train.max_iter=90000

Without CUDA everything runs on the CPU; `--num-gpus N` (or torchrun) then runs N processes over
gloo. A process that dies stops the others within a minute, exit code 75 (docs/RELIABILITY.md).
SIGTERM or SIGUSR1 during training: a checkpoint of the current iteration, exit code 143; rerun
with --resume (docs/RELIABILITY.md).
"""

from detcommon.engine.launch import launch
from detcommon.engine.train import argument_parser, main

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
