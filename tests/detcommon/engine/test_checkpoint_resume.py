"""Crash-safe checkpoints and resume: kill -9 in the middle of a run and in the middle of writing
a checkpoint, a non-finite loss, non-finite weights. --resume must continue from the last
complete checkpoint, at the right iteration and learning rate."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from detcommon.engine.checkpoint import AtomicCheckpointer
from tests.conftest import REPO, TINY_OPTS, run_train_net

CONFIG = "configs/shapes/dh_ext.yaml"
# Checkpoints after iterations 1, 3, 5; the learning rate drops tenfold at iterations 3 and 5.
SCHEDULE = ["SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(3, 5)", "DATASETS.TEST", "()"]
LAST_LR = 0.02 * 0.1**2  # shapes BASE_LR after both steps: the rate of iteration 5

# train_net.py with test-only faults: $FAULT_PAUSE_AT_ITER hangs before that iteration runs;
# $FAULT_SLOW_SAVE hangs halfway through writing the checkpoint file whose name contains it.
# Either touches $FAULT_MARKER when it hangs, so the test knows when to kill.
RUNNER = r"""
import io, os, runpy, sys, time
import torch
from detectron2.engine import train_loop

def hang():
    open(os.environ["FAULT_MARKER"], "w").close()
    time.sleep(600)

target, pause_iter, save = os.environ.get("FAULT_SLOW_SAVE"), os.environ.get("FAULT_PAUSE_AT_ITER"), torch.save
run_step = train_loop.SimpleTrainer.run_step

def slow_save(obj, f, *args, **kwargs):
    if target and target in getattr(f, "name", ""):
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        hang()
    return save(obj, f, *args, **kwargs)

def paused_run_step(self):
    if pause_iter and self.iter == int(pause_iter):
        hang()
    return run_step(self)

torch.save, train_loop.SimpleTrainer.run_step = slow_save, paused_run_step
sys.argv = ["train_net.py", *sys.argv[1:]]
runpy.run_path("train_net.py", run_name="__main__")
"""


def _kill_when_hung(out, **faults):
    """Starts a run with the given faults, kill -9s it once it hangs; returns its output."""
    marker, log_path = os.path.join(out, "hung"), os.path.join(out, "killed_run.log")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAULT_MARKER": marker, **faults}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, "--config-file", CONFIG, *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.time() + 300
        while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        hung = proc.poll() is None and os.path.exists(marker)
        proc.kill()
        proc.wait()
    with open(log_path) as f:
        output = f.read()
    assert hung and proc.returncode == -signal.SIGKILL, output[-3000:]
    return output


def _last_checkpoint(out):
    with open(os.path.join(out, "last_checkpoint")) as f:
        return f.read()


def _resume_and_check(out, start_iter):
    code, log = run_train_net(
        "--config-file", CONFIG, "--resume", *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out
    )
    assert code == 0, log[-3000:]
    assert f"Starting training from iteration {start_iter}" in log
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if "total_loss" in line]
    assert rows[-1]["iteration"] == 5 and rows[-1]["lr"] == pytest.approx(LAST_LR)
    assert _last_checkpoint(out) == "model_final.pth"
    assert glob.glob(os.path.join(out, ".*.tmp")) == []  # the killed write's leftover was removed
    for name in ("model_0000003.pth", "model_final.pth"):
        assert torch.load(os.path.join(out, name), weights_only=False)["iteration"] in (3, 5)


def test_kill_in_the_middle_of_a_run_resumes_from_the_last_checkpoint(tmp_path):
    out = str(tmp_path)
    _kill_when_hung(out, FAULT_PAUSE_AT_ITER="4")
    assert _last_checkpoint(out) == "model_0000003.pth"
    checkpoint = torch.load(os.path.join(out, "model_0000003.pth"), weights_only=False)
    assert checkpoint["iteration"] == 3
    # The learning-rate schedule was saved where iteration 4 starts (rate 0.002).
    assert checkpoint["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 4
    assert checkpoint["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        0.002
    )
    _resume_and_check(out, start_iter=4)


def test_kill_while_writing_a_checkpoint_never_resumes_the_partial_file(tmp_path):
    out = str(tmp_path)
    _kill_when_hung(out, FAULT_SLOW_SAVE="model_0000003")
    # Half of model_0000003 was on disk, under a temporary name only.
    (partial,) = glob.glob(os.path.join(out, ".model_0000003.pth.*.tmp"))
    assert os.path.getsize(partial) > 0
    assert not os.path.exists(os.path.join(out, "model_0000003.pth"))
    assert _last_checkpoint(out) == "model_0000001.pth"
    _resume_and_check(out, start_iter=2)


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _fail_halfway(monkeypatch):
    """torch.save writes half of the file, then the process 'dies' (an exception here)."""
    save = torch.save

    def half_then_die(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", half_then_die)


@pytest.mark.parametrize("checkpointer_class", [DetectionCheckpointer, AtomicCheckpointer])
def test_a_write_that_dies_leaves_the_previous_checkpoint(
    tmp_path, monkeypatch, checkpointer_class
):
    """Detectron2's checkpointer leaves a partial file under the final name and an empty
    last_checkpoint; AtomicCheckpointer leaves the previous state."""
    checkpointer = checkpointer_class(_model(), str(tmp_path))
    checkpointer.save("model_0000001")
    with monkeypatch.context() as patch:
        _fail_halfway(patch)
        with pytest.raises(KeyboardInterrupt):
            checkpointer.save("model_0000003")
    with pytest.raises(TypeError):
        checkpointer.tag_last_checkpoint(3)  # dies after opening last_checkpoint for writing
    partial_visible = os.path.exists(tmp_path / "model_0000003.pth")
    tag = _last_checkpoint(str(tmp_path))
    if checkpointer_class is DetectionCheckpointer:
        assert partial_visible and tag == ""
    else:
        assert not partial_visible and tag == "model_0000001.pth"
        assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
        assert checkpointer_class(_model(), str(tmp_path)).resume_or_load("", resume=True) == {}


def test_non_finite_weights_are_never_saved(tmp_path):
    model = _model()
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(
        FloatingPointError, match=r"NaN/inf in weight.*last good checkpoint is .*model_0000001.pth"
    ):
        checkpointer.save("model_0000003")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]


def test_nan_loss_stops_training_naming_iteration_and_loss_and_keeps_the_checkpoint(tmp_path):
    from detcommon.engine.train import Trainer, argument_parser, setup

    out = str(tmp_path)
    cfg = setup(
        argument_parser().parse_args(
            ["--config-file", CONFIG, *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out]
        )
    )
    trainer = Trainer(cfg)

    def nan_at_iteration_3(module, inputs, output):
        proposals, losses = output
        if trainer.iter == 3:
            losses = {**losses, "loss_cls_fc": losses["loss_cls_fc"] * float("nan")}
        return proposals, losses

    trainer.model.roi_heads.register_forward_hook(nan_at_iteration_3)
    trainer.resume_or_load(resume=False)
    # Detectron2's SimpleTrainer stops before the optimizer step, naming iteration and terms.
    with pytest.raises(
        FloatingPointError, match=r"(?s)iteration=3!.*'loss_cls_fc': (np.float64\()?nan"
    ):
        trainer.train()
    assert _last_checkpoint(out) == "model_0000001.pth"
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000001.pth"]
    weights = torch.load(os.path.join(out, "model_0000001.pth"), weights_only=False)["model"]
    assert all(v.isfinite().all() for v in weights.values() if v.is_floating_point())
