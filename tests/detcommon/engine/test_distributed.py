"""Two CPU processes over gloo (the one file of the suite for multi-process training) for the FPN
baseline, Double-Head-Ext and the Decoupled R-CNN cascade, each model with one launcher and each
launcher once: `train_net.py --num-gpus 2`, `torchrun --nproc_per_node 2` and two local
"machines" (`--num-machines 2 --machine-rank {0,1} --dist-url tcp://...`). Whether DDP works
depends on the model (every parameter in every step) and on the launcher (rendezvous, ranks), not
on the pair, so three runs cover what five did. Both ranks log, their losses are
averaged into metrics.json, evaluation gathers the detections of both ranks, and metrics.json
and the TensorBoard events hold every loss term (every parameter takes part in every step, as
DistributedDataParallel requires)."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detcommon.engine.monitor import RANK_LOSS_LOG_ENV
from tests.conftest import REPO, TINY_OPTS, free_port, torchrun_command

NUM_VAL_IMAGES = 5  # conftest's tiny_val: the two ranks evaluate 3 and 2 images
HEAD_LOSSES = {
    "faster_rcnn": ["loss_cls", "loss_box_reg"],
    "dh_ext": ["loss_cls_fc", "loss_box_reg_fc", "loss_cls_conv", "loss_box_reg_conv"],
    "drcnn_cascade": ["loss_cls", "loss_box_reg_s1", "loss_box_reg_s2", "loss_box_reg_s3"],
}


# (model, launcher): every model once, every launcher once.
RUNS = [
    ("faster_rcnn", "num_gpus"),
    ("dh_ext", "torchrun"),
    ("drcnn_cascade", "two_machines"),
]


def _commands(launcher, args):
    """The command lines that start a 2-process run of train_net.py `args` with `launcher`."""
    train_net = os.path.join(REPO, "train_net.py")
    if launcher == "num_gpus":
        return [[sys.executable, train_net, "--num-gpus", "2", *args]]
    if launcher == "torchrun":
        return [[*torchrun_command(2), train_net, *args]]
    url = f"tcp://127.0.0.1:{free_port()}"
    return [
        [
            sys.executable,
            train_net,
            "--num-machines",
            "2",
            "--machine-rank",
            str(m),
            "--dist-url",
            url,
            *args,
        ]
        for m in (0, 1)
    ]


@pytest.fixture(scope="module", params=RUNS, ids=["-".join(run) for run in RUNS])
def ddp_run(request, tiny_val, tmp_path_factory):
    """A 3-iteration, 2-process run that evaluates on tiny_val; returns (model, output dir)."""
    model, launcher = request.param
    out = str(tmp_path_factory.mktemp(f"{model}-{launcher}"))
    args = [
        "--config-file", f"configs/shapes/{model}.yaml", *tiny_val, *TINY_OPTS,
        "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "('tiny_val',)", "OUTPUT_DIR", out,
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        RANK_LOSS_LOG_ENV: os.path.join(out, "rank_losses"),
    }
    procs = [
        subprocess.Popen(
            c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for c in _commands(launcher, args)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), logs[0][-3000:]
    assert "DistributedDataParallel over 2 gloo processes" in logs[0]
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    return model, out


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_metrics_are_the_mean_of_both_ranks_losses(ddp_run):
    _, out = ddp_run
    ranks = [_jsonl(os.path.join(out, "rank_losses", f"rank_losses.{r}.jsonl")) for r in (0, 1)]
    assert [[row["iteration"] for row in rows] for rows in ranks] == [[0, 1, 2], [0, 1, 2]]
    (final,) = [row for row in _jsonl(os.path.join(out, "metrics.json")) if "total_loss" in row]
    assert final["iteration"] == 2
    loss_names = [k for k in ranks[0][0] if k != "iteration"]
    assert any(
        ranks[0][0][k] != ranks[1][0][k] for k in loss_names
    )  # the ranks saw different images
    # Every iteration's losses are averaged over the ranks; metrics.json holds the median over
    # the (here three) iterations of that average, as Detectron2's JSONWriter smooths them.
    means = {k: [np.mean([rows[i][k] for rows in ranks]) for i in range(3)] for k in loss_names}
    for name, values in means.items():
        assert final[name] == pytest.approx(np.median(values), rel=1e-5), name
    assert final["total_loss"] == pytest.approx(
        np.median(np.sum(list(means.values()), axis=0)), rel=1e-5
    )


def test_evaluation_gathers_the_detections_of_both_ranks(ddp_run):
    _, out = ddp_run
    with open(os.path.join(out, "log.txt")) as f:
        main_log = f.read()
    with open(os.path.join(out, "log.txt.rank1")) as f:
        rank1_log = f.read()
    assert "Rank of current process: 0. World size: 2" in main_log
    assert "Rank of current process: 1. World size: 2" in rank1_log
    assert (
        "Start inference on 3 batches" in main_log and "Start inference on 2 batches" in rank1_log
    )
    predictions_file = os.path.join(out, "inference", "tiny_val", "instances_predictions.pth")
    predictions = torch.load(predictions_file, weights_only=False)
    assert sorted(p["image_id"] for p in predictions) == list(range(1, NUM_VAL_IMAGES + 1))
    assert "bbox/AP90" in _jsonl(os.path.join(out, "metrics.json"))[-1]


def test_metrics_json_and_tensorboard_hold_every_loss_term(ddp_run):
    model, out = ddp_run
    expected = {"total_loss", "loss_rpn_cls", "loss_rpn_loc", "lr", *HEAD_LOSSES[model]}
    (final,) = [row for row in _jsonl(os.path.join(out, "metrics.json")) if "total_loss" in row]
    assert expected <= set(final)
    (events,) = glob.glob(os.path.join(out, "events.out.tfevents.*"))
    scalars = EventAccumulator(events).Reload().Tags()["scalars"]
    assert expected <= set(scalars), sorted(scalars)
