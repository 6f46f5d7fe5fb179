"""train_net.py with the Decoupled R-CNN shapes configs: a few iterations and evaluation (two
processes: tests/detcommon/engine/test_distributed.py)."""

import pytest

from tests.conftest import TINY_OPTS, run_train_net

CONFIG = "configs/shapes/drcnn_cascade.yaml"


@pytest.mark.slow
def test_train_and_evaluate(tmp_path, tiny_val):
    code, log = run_train_net(
        "--config-file", CONFIG, *tiny_val, *TINY_OPTS, "DATASETS.TEST", "('tiny_val',)",
        "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    assert code == 0, log[-3000:]
    assert "loss_box_reg_s3" in log
    assert "AP90" in log  # the shared evaluator printed its table (conftest's 5-image tiny_val)
