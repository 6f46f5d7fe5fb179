"""Bad checkpoints and a full disk: a missing, truncated or non-checkpoint file as MODEL.WEIGHTS
or met by --resume fails naming the file (--resume falls back to the newest readable checkpoint
with a warning, never silently from scratch); a checkpoint write that fails with ENOSPC stops
training naming the directory, and --resume continues from the previous checkpoint."""

import errno
import logging
import os
import subprocess
import sys

import pytest
import torch
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler
from torch import nn

import detcommon.engine.checkpoint
from detcommon.engine.checkpoint import AtomicCheckpointer, CheckpointReadError
from tests.conftest import REPO, TINY_OPTS, run_train_net

CONFIG = "configs/shapes/dh_ext.yaml"
SCHEDULE = ["SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()"]  # checkpoints after iterations 1 and 3
FIX = "Point MODEL.WEIGHTS to a complete checkpoint"


class FullDisk:
    """A file that takes `room` bytes, then fails every write as a full disk does."""

    def __init__(self, f, room):
        self._f, self._room = f, room

    def write(self, data):
        if not isinstance(data, str):
            data = memoryview(data).cast("B")
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _full_disk_for(target, room=1000):
    """An `open` for detcommon.engine.checkpoint's atomic writer: files whose name contains `target` fill the disk."""

    def full_disk_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return FullDisk(f, room) if target in os.path.basename(path) and "w" in mode else f

    return full_disk_open


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


@pytest.fixture
def caplog(caplog, monkeypatch):
    """pytest's caplog, also when an earlier test of the session ran Detectron2's setup_logger on
    "detcommon", which stops its records from propagating to the root logger."""
    monkeypatch.setattr(logging.getLogger("detcommon"), "propagate", True)
    return caplog


@pytest.fixture
def checkpoints(tmp_path):
    """model_0000001.pth, model_0000003.pth and model_final.pth of a Linear model (weights seeded
    0, 1, 2); last_checkpoint names model_final.pth."""
    for seed, (name, iteration) in enumerate(
        [("model_0000001", 1), ("model_0000003", 3), ("model_final", 3)]
    ):
        AtomicCheckpointer(_model(seed), str(tmp_path)).save(name, iteration=iteration)
    return tmp_path


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


BAD_FILES = {
    "missing": (None, "does not exist"),
    "truncated": (_truncate, "is truncated or corrupt (RuntimeError: PytorchStreamReader failed"),
    "empty": (lambda p: _write(p, b""), "is empty"),
    "text": (
        lambda p: _write(p, b"not a checkpoint\n"),
        "is truncated or not a PyTorch/Detectron2 checkpoint",
    ),
    "jpeg": (
        lambda p: _write(p, b"\xff\xd8\xff\xe0" + bytes(200)),
        "is truncated or not a PyTorch/Detectron2",
    ),
    "list": (lambda p: torch.save([1, 2], p), "is not a checkpoint: it holds a list"),
    "tensor": (lambda p: torch.save(torch.ones(2), p), "is not a checkpoint: it holds a Tensor"),
    "no weights": (
        lambda p: torch.save({"lr": 0.1}, p),
        "is not a checkpoint: its weights are float, not tensors",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_model_weights_name_the_file_and_the_fix(checkpoints, kind):
    make, problem = BAD_FILES[kind]
    path = str(checkpoints / "model_0000003.pth")
    if make is None:
        os.remove(path)
    else:
        make(path)
    with pytest.raises(CheckpointReadError) as e:
        AtomicCheckpointer(_model()).resume_or_load(path, resume=False)
    assert f"MODEL.WEIGHTS: Checkpoint '{path}' " in str(e.value) or f"File '{path}' " in str(
        e.value
    )
    assert problem in str(e.value) and FIX in str(e.value)


class _TestWeights(PathHandler):
    """test-weights://NAME -> the file NAME in `directory`, as detectron2:// resolves to a cache."""

    directory = None

    def _get_supported_prefixes(self):
        return ["test-weights://"]

    def _get_local_path(self, path, **kwargs):
        return os.path.join(self.directory, path[len("test-weights://") :])


PathManager.register_handler(_TestWeights())


def test_url_like_weights_resolve_through_the_path_manager(checkpoints):
    _TestWeights.directory = str(checkpoints)
    model = _model()
    AtomicCheckpointer(model).resume_or_load("test-weights://model_0000003.pth", resume=False)
    assert torch.equal(model.weight, _model(1).weight)
    _truncate(checkpoints / "model_0000001.pth")
    with pytest.raises(
        CheckpointReadError, match=f"'{checkpoints}/model_0000001.pth' is truncated or corrupt"
    ):
        AtomicCheckpointer(_model()).resume_or_load(
            "test-weights://model_0000001.pth", resume=False
        )


def test_resume_falls_back_to_the_newest_readable_checkpoint(checkpoints, caplog):
    _truncate(checkpoints / "model_final.pth")
    _write(checkpoints / "model_0000003.pth", b"not a checkpoint\n")
    model = _model()
    with caplog.at_level(logging.WARNING, logger="detcommon.engine.checkpoint"):
        extra = AtomicCheckpointer(model, str(checkpoints)).resume_or_load("", resume=True)
    assert extra == {"iteration": 1} and torch.equal(model.weight, _model(0).weight)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"Checkpoint '{checkpoints}/model_final.pth' is truncated or corrupt" in warning
    assert f"Checkpoint '{checkpoints}/model_0000003.pth' is truncated or not a PyTorch" in warning
    assert (
        f"Resumed from {checkpoints}/model_0000001.pth, the newest readable checkpoint" in warning
    )


def test_resume_without_last_checkpoint_takes_the_newest(checkpoints, caplog):
    os.remove(checkpoints / "last_checkpoint")
    model = _model()
    with caplog.at_level(logging.WARNING, logger="detcommon.engine.checkpoint"):
        AtomicCheckpointer(model, str(checkpoints)).resume_or_load("", resume=True)
    assert torch.equal(model.weight, _model(2).weight)  # model_final.pth
    assert (
        f"{checkpoints}/last_checkpoint is missing. Resumed from {checkpoints}/model_final.pth"
        in caplog.text
    )


def test_resume_never_starts_from_scratch_when_no_checkpoint_is_readable(checkpoints):
    for name in ("model_0000001.pth", "model_0000003.pth", "model_final.pth"):
        _truncate(checkpoints / name)
    with pytest.raises(CheckpointReadError, match=rf"--resume: no readable checkpoint in {checkpoints}: .*"
                       r"model_final.pth' is truncated .*model_0000003.pth' .*model_0000001.pth' .*"
                       r"or train without --resume in a new OUTPUT_DIR"):  # fmt: skip
        AtomicCheckpointer(_model(), str(checkpoints)).resume_or_load("", resume=True)


def test_resume_in_an_empty_directory_starts_from_model_weights(tmp_path):
    """The first run of a job that always passes --resume (a requeued SLURM script)."""
    assert AtomicCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True) == {}


@pytest.mark.parametrize("target", ["model_0000003", "last_checkpoint"])
def test_a_full_disk_names_the_directory_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, target
):
    checkpointer = AtomicCheckpointer(_model(), str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    monkeypatch.setattr(
        detcommon.engine.checkpoint, "open", _full_disk_for(target, room=5), raising=False
    )
    with pytest.raises(OSError) as e:
        checkpointer.save("model_0000003", iteration=3)
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == (
        f"[Errno 28] Cannot write checkpoint model_0000003.pth in {tmp_path}: No space left on device. "
        f"last_checkpoint still names {tmp_path}/model_0000001.pth: free space there (or move OUTPUT_DIR "
        "to another disk), then rerun with --resume"
    )
    monkeypatch.undo()
    written = (
        ["model_0000003.pth"] if target == "last_checkpoint" else []
    )  # complete, not yet named
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["last_checkpoint", "model_0000001.pth", *written]
    )
    assert AtomicCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True) == {
        "iteration": 1
    }


# End to end through train_net.py.


def test_eval_only_with_truncated_weights_names_the_file(checkpoints):
    weights = str(checkpoints / "model_final.pth")
    _truncate(weights)
    code, log = run_train_net("--config-file", CONFIG, "--eval-only", *TINY_OPTS, "MODEL.WEIGHTS", weights,
                              "OUTPUT_DIR", str(checkpoints / "eval"))  # fmt: skip
    assert code != 0
    assert f"MODEL.WEIGHTS: Checkpoint '{weights}' is truncated or corrupt" in log and FIX in log


def test_training_from_a_non_checkpoint_names_the_file(tmp_path):
    weights = str(tmp_path / "weights.pth")
    _write(weights, b"<html>404 Not Found</html>\n")
    code, log = run_train_net("--config-file", CONFIG, *TINY_OPTS, "MODEL.WEIGHTS", weights,
                              "OUTPUT_DIR", str(tmp_path / "out"))  # fmt: skip
    assert code != 0
    assert (
        f"MODEL.WEIGHTS: Checkpoint '{weights}' is truncated or not a PyTorch/Detectron2 checkpoint"
        in log
    )


def test_resume_through_train_net_skips_unreadable_checkpoints(tmp_path):
    out = str(tmp_path)
    code, log = run_train_net("--config-file", CONFIG, *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out)
    assert code == 0, log[-3000:]
    _truncate(os.path.join(out, "model_final.pth"))
    _write(os.path.join(out, "model_0000003.pth"), b"")
    code, log = run_train_net(
        "--config-file", CONFIG, "--resume", *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out
    )
    assert code == 0, log[-3000:]
    assert f"Checkpoint '{out}/model_final.pth' is truncated or corrupt" in log
    assert f"Checkpoint '{out}/model_0000003.pth' is empty" in log
    assert f"Resumed from {out}/model_0000001.pth, the newest readable checkpoint" in log
    assert "Starting training from iteration 2" in log
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["iteration"] == 3


# train_net.py whose checkpoint writes fill the disk at the file named by $FAULT_ENOSPC.
ENOSPC_RUNNER = f"""
import os, runpy, sys
sys.path.insert(0, {REPO!r})
import detcommon.engine.checkpoint
from tests.detcommon.engine.test_checkpoint import _full_disk_for

detcommon.engine.checkpoint.open = _full_disk_for(os.environ["FAULT_ENOSPC"], room=1 << 20)
sys.argv = ["train_net.py", *sys.argv[1:]]
runpy.run_path("train_net.py", run_name="__main__")
"""


def test_training_on_a_full_disk_stops_and_resumes_from_the_previous_checkpoint(tmp_path):
    out = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", ENOSPC_RUNNER, "--config-file", CONFIG, *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "FAULT_ENOSPC": "model_0000003"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert (
        f"OSError: [Errno 28] Cannot write checkpoint model_0000003.pth in {out}: No space left on device. "
        f"last_checkpoint still names {out}/model_0000001.pth" in proc.stdout
    ), proc.stdout[-3000:]
    assert sorted(f for f in os.listdir(out) if "model" in f) == [
        "model_0000001.pth"
    ]  # no partial file left
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_0000001.pth"
    code, log = run_train_net(
        "--config-file", CONFIG, "--resume", *TINY_OPTS, *SCHEDULE, "OUTPUT_DIR", out
    )
    assert code == 0, log[-3000:]
    assert "Starting training from iteration 2" in log
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["iteration"] == 3
