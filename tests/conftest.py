"""Shared fixtures: an isolated shapes cache for the whole run and tiny-run config options."""

import os
import subprocess
import sys
import tempfile
import time

import pytest

# Before anything imports detcommon: the suite never reads or writes the user's dataset cache.
os.environ.setdefault("SHAPES_DATASET_DIR", tempfile.mkdtemp(prefix="shapes-test-cache-"))
# Nor the pretrained backbone's cache: no test trains the real backbone (TINY_OPTS start from
# scratch; tests of detcommon.pretrain use tiny recipes).
os.environ.setdefault("SHAPES_PRETRAINED_DIR", tempfile.mkdtemp(prefix="pretrained-test-cache-"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Turns any shapes config into a seconds-long CPU run (tiny inputs, few RoIs, no workers).
TINY_OPTS = [
    "MODEL.WEIGHTS",
    "",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "()",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
    "DATALOADER.NUM_WORKERS",
    "0",
]


# Narrows a Double-Head shapes config to a model that runs in milliseconds on the CPU.
TINY_DOUBLE_HEAD_OPTS = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.FPN.OUT_CHANNELS",
    32,
    "MODEL.DOUBLE_HEAD.CONV_HEAD.CONV_DIM",
    32,
    "MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_DIM",
    16,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    64,
]


def project_cfg(config_file):
    """The config train_net.py builds from `config_file` (relative to the repository), before
    options, checks and any logging or dataset side effect."""
    from detcommon.config import get_project_cfg

    cfg = get_project_cfg()
    cfg.merge_from_file(os.path.join(REPO, config_file))
    return cfg


def tiny_double_head_cfg(config="configs/shapes/dh_ext.yaml", opts=()):
    """`config` (any shapes model) shrunk by TINY_DOUBLE_HEAD_OPTS, then `opts`."""
    cfg = project_cfg(config)
    cfg.merge_from_list([*TINY_DOUBLE_HEAD_OPTS, *opts])
    return cfg


def write_video(path, num_frames, size=(160, 128)):
    """An MJPG video of the first `num_frames` shapes_val images at `size` (width, height)."""
    import cv2

    from detcommon.data.shapes import ensure_shapes

    images = os.path.join(ensure_shapes("shapes_val"), "images")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, size)
    for i in range(num_frames):
        writer.write(cv2.resize(cv2.imread(os.path.join(images, f"{i:05d}.png")), size))
    writer.release()


def decodes_and_not_blank(path):
    """Asserts that the image file at `path` decodes, is larger than 100x100 and is not blank."""
    import cv2

    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 10  # more than a blank canvas


@pytest.fixture(scope="session")
def tiny_val(tmp_path_factory):
    """`--dataset` arguments registering the first 5 images of shapes_val as "tiny_val" (odd: two
    ranks evaluate 3 and 2 images)."""
    import json

    from detcommon.data.shapes import ensure_shapes

    split = ensure_shapes("shapes_val")
    with open(os.path.join(split, "annotations.json")) as f:
        coco = json.load(f)
    images = coco["images"][:5]
    ids = {image["id"] for image in images}
    coco.update(images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    json_file = str(tmp_path_factory.mktemp("tiny_val") / "tiny_val.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return ["--dataset", "tiny_val", json_file, os.path.join(split, "images")]


@pytest.fixture(scope="session")
def shapes_root():
    return os.environ["SHAPES_DATASET_DIR"]


def run_train_net(*args, timeout=600):
    """Runs train_net.py in a subprocess; returns (returncode, combined output)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc.returncode, proc.stdout


# Imported at start-up by every Python process of a run (launchers and the processes they
# start) once `site_dir` is on PYTHONPATH: iteration $FAULT_PAUSE_AT_ITER waits, before it runs,
# until the test has done its fault. Each rank announces the wait in $FAULT_MARKER.<rank> (its
# pid) and waits for the test to remove it.
SITECUSTOMIZE = r"""
import os, time
if os.environ.get("FAULT_PAUSE_AT_ITER"):
    import detectron2.utils.comm as comm
    from detectron2.engine import train_loop

    run_step = train_loop.SimpleTrainer.run_step

    def paused_run_step(self):
        if self.iter == int(os.environ["FAULT_PAUSE_AT_ITER"]):
            marker = f"{os.environ['FAULT_MARKER']}.{comm.get_rank()}"
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            deadline = time.time() + 300
            while os.path.exists(marker) and time.time() < deadline:
                time.sleep(0.02)
        return run_step(self)

    train_loop.SimpleTrainer.run_step = paused_run_step
"""


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(nproc):
    """The command line start of `torchrun --nproc_per_node nproc` on a free port, with this
    interpreter (append the script and its arguments)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(free_port()),
    ]


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("site")
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return str(directory)


class PausedRun:
    """Starts `commands` (argv lists run in the repository, e.g. the two "machines" of a run)
    with every rank of the run held before iteration `pause_at`: the test does its fault (signals
    `launcher_pid(i)` or `rank_pid(r)`), then `release()` lets the ranks go on and `wait()` returns
    ([(exit code, output) per command], seconds from release to the last exit)."""

    def __init__(self, site_dir, out, commands, num_ranks, pause_at, env=None):
        self.marker = os.path.join(out, "paused")
        self.markers = [f"{self.marker}.{rank}" for rank in range(num_ranks)]
        self.env = {
            **os.environ, "OMP_NUM_THREADS": "1", "FAULT_PAUSE_AT_ITER": str(pause_at), "FAULT_MARKER": self.marker,
            "PYTHONPATH": os.pathsep.join([site_dir, os.environ.get("PYTHONPATH", "")]), **(env or {}),
        }  # fmt: skip
        self.commands, self.logs = (
            commands,
            [os.path.join(out, f"launcher{i}.log") for i in range(len(commands))],
        )
        self.procs, self.released = [], None

    def __enter__(self):
        for command, log_path in zip(self.commands, self.logs):
            with open(log_path, "w") as log:
                self.procs.append(
                    subprocess.Popen(
                        command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
        deadline = time.time() + 300
        while not all(map(os.path.exists, self.markers)) and time.time() < deadline:
            assert all(p.poll() is None for p in self.procs), self.output()
            time.sleep(0.1)
        assert all(map(os.path.exists, self.markers)), self.output()
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def output(self, i=0):
        with open(self.logs[i]) as f:
            return f.read()[-3000:]

    def launcher_pid(self, i=0):
        return self.procs[i].pid

    def rank_pid(self, rank):
        with open(self.markers[rank]) as f:
            return int(f.read())

    def release(self):
        self.released = time.monotonic()
        for m in self.markers:
            if os.path.exists(m):
                os.remove(m)

    def wait(self, timeout=120):
        codes = [p.wait(timeout=timeout) for p in self.procs]
        seconds = time.monotonic() - self.released
        results = []
        for code, log_path in zip(codes, self.logs):
            with open(log_path) as f:
                results.append((code, f.read()))
        return results, seconds
