"""train_net.py with the Decoupled R-CNN shapes configs: a few iterations, evaluation, and DDP."""

import pytest

from tests.conftest import TINY_OPTS, run_train_net

CONFIG = "configs/shapes/drcnn_cascade.yaml"


@pytest.mark.slow
def test_train_and_evaluate(tmp_path):
    code, log = run_train_net("--config-file", CONFIG, *TINY_OPTS, "OUTPUT_DIR", str(tmp_path))
    assert code == 0, log[-3000:]
    assert "loss_box_reg_s3" in log
    assert "AP90" in log  # the shared evaluator printed its table on shapes_val


@pytest.mark.slow
def test_two_processes_over_gloo(tmp_path):
    """Every parameter takes part in every step, as DistributedDataParallel requires."""
    code, log = run_train_net(
        "--config-file", CONFIG, "--num-gpus", "2", *TINY_OPTS, "SOLVER.MAX_ITER", "3",
        "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    assert code == 0, log[-3000:]
    assert "World size: 2" in log
    assert "DistributedDataParallel over 2 gloo processes" in log
    assert "iter: 2 " in log  # the last of the 3 iterations was logged
