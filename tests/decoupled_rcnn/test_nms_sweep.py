"""The NMS-threshold sweep runner on fake trainings and fake metrics.json files."""

import json
import os
import subprocess

import pytest

from decoupled_rcnn import nms_sweep
from tools import analyze


def _finish(run_dir, ap):
    """What a finished training leaves: model_final.pth and metrics.json with an evaluation."""
    os.makedirs(run_dir, exist_ok=True)
    lines = [
        {"iteration": 0, "total_loss": 2.0},
        {
            "iteration": 9,
            "bbox/AP": ap,
            "bbox/AP50": ap + 20,
            "bbox/AP60": ap + 15,
            "bbox/AP70": ap + 5,
            "bbox/AP75": ap,
            "bbox/AP80": ap - 5,
            "bbox/AP90": ap - 10,
        },
        {"iteration": 9, "total_loss": 1.0},
    ]
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + "\n")
    open(os.path.join(run_dir, "model_final.pth"), "w").close()


class FakeTrainer:
    """Stands in for subprocess.run: records the commands and "trains" by writing metrics."""

    def __init__(self, fail=()):
        self.commands, self.fail = [], fail

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        run_dir = command[command.index("OUTPUT_DIR") + 1]
        nms_reg = float(command[command.index("MODEL.DECOUPLED.NMS_THRESH_REG") + 1])
        if nms_reg in self.fail:
            return subprocess.CompletedProcess(command, 1)
        _finish(run_dir, 100 * nms_reg - 50)
        return subprocess.CompletedProcess(command, 0)


def test_settings_skip_a_regression_threshold_below_the_classification_one():
    assert nms_sweep.sweep_settings([0.7, 0.8], [0.75, 0.9]) == [
        (0.7, 0.75),
        (0.7, 0.9),
        (0.8, 0.9),
    ]


def test_table_from_metrics_files(tmp_path):
    _finish(nms_sweep.setting_dir(tmp_path, 0.7, 0.85), 36.6)
    _finish(nms_sweep.setting_dir(tmp_path, 0.7, 0.7), 35.0)
    os.makedirs(nms_sweep.setting_dir(tmp_path, 0.7, 0.8))  # started, never evaluated
    rows = nms_sweep.run_sweep("cfg.yaml", [0.7], [0.7, 0.8, 0.85], str(tmp_path), dry_run=True)
    table = nms_sweep.write_table(rows, tmp_path / "t.md", tmp_path / "t.json")
    assert table.splitlines() == [
        "| NMS_cls | NMS_reg | AP | AP50 | AP60 | AP70 | AP80 | AP90 | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| 0.70 | 0.70 | 35.0 | 55.0 | 50.0 | 40.0 | 30.0 | 25.0 | finished |",
        "| 0.70 | 0.80 | - | - | - | - | - | - | not run |",
        "| 0.70 | 0.85 | 36.6 | 56.6 | 51.6 | 41.6 | 31.6 | 26.6 | finished |",
    ]
    assert (tmp_path / "t.md").read_text() == table
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved[2]["metrics"]["AP90"] == pytest.approx(26.6) and saved[1]["metrics"] is None


def test_sweep_trains_only_unfinished_settings_and_resumes(tmp_path):
    _finish(nms_sweep.setting_dir(tmp_path, 0.7, 0.8), 30.0)
    trainer = FakeTrainer(fail=(0.9,))
    rows = nms_sweep.run_sweep(
        "configs/shapes/drcnn.yaml",
        [0.7],
        [0.8, 0.85, 0.9],
        str(tmp_path),
        opts=["SOLVER.MAX_ITER", "10"],
        run=trainer,
    )
    assert [r["status"] for r in rows[:2]] == ["finished", "finished"]
    assert rows[2]["status"].startswith("failed (exit 1, see ")
    assert rows[1]["metrics"]["AP"] == pytest.approx(35.0)
    assert len(trainer.commands) == 2  # 0.8 was already finished
    command = trainer.commands[0]
    assert "--resume" in command and command[command.index("--config-file") + 1].endswith(
        "drcnn.yaml"
    )
    # the setting's values come after the user's overrides, so they win
    assert command.index("SOLVER.MAX_ITER") < command.index("MODEL.RPN.NMS_THRESH")
    assert command[command.index("MODEL.RPN.NMS_THRESH") + 1] == "0.7"
    assert command[-2:] == ["OUTPUT_DIR", nms_sweep.setting_dir(str(tmp_path), 0.7, 0.85)]
    # run again: only the failed setting trains
    nms_sweep.run_sweep(
        "configs/shapes/drcnn.yaml", [0.7], [0.8, 0.85, 0.9], str(tmp_path), run=trainer
    )
    assert len(trainer.commands) == 3


def test_command_line_dry_run_and_non_decoupled_config(tmp_path, capsys):
    sweep = [
        "nms-sweep",
        "--config-file",
        "configs/shapes/drcnn.yaml",
        "--output-dir",
        str(tmp_path),
    ]
    analyze.main([*sweep, "--nms-reg", "0.8", "0.9", "--dry-run", "SOLVER.MAX_ITER", "5"])
    printed = [line for line in capsys.readouterr().out.splitlines() if "train_net.py" in line]
    assert len(printed) == 2 and "SOLVER.MAX_ITER 5" in printed[0]
    assert "MODEL.DECOUPLED.NMS_THRESH_REG 0.9" in printed[1]
    with pytest.raises(SystemExit) as e:
        analyze.main(
            [
                "nms-sweep",
                "--config-file",
                "configs/shapes/dh_ext.yaml",
                "--output-dir",
                str(tmp_path),
            ]
        )
    assert e.value.code == 2
    assert "not 'DecoupledRPN'" in capsys.readouterr().err
