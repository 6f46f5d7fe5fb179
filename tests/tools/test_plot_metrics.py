"""tools/plot_metrics.py: every loss term and bbox AP column of each run's metrics.json drawn
against iterations, one line per run, with exactly the file's values."""

import json
import os

import matplotlib.image
import pytest

from detcommon.curves import plot_runs, window_means
from tools.plot_metrics import main as plot_metrics_main

# Two runs with different heads, as Detectron2's JSONWriter writes them: training rows every few
# iterations, evaluation rows (with a per-class AP that is not plotted), a resumed iteration.
RUNS = {
    "faster_rcnn": [
        {"iteration": 19, "total_loss": 2.0, "loss_cls": 1.2, "loss_box_reg": 0.8, "lr": 0.01},
        {"iteration": 39, "total_loss": 1.5, "loss_cls": 0.9, "loss_box_reg": 0.6, "lr": 0.02},
        {"iteration": 39, "bbox/AP": 10.0, "bbox/AP50": 20.0, "bbox/AP-circle": 5.0},
        {"iteration": 59, "total_loss": 1.0, "loss_cls": 0.6, "loss_box_reg": 0.4, "lr": 0.02},
        {"iteration": 60, "bbox/AP": 15.0, "bbox/AP50": 30.0, "bbox/AP-circle": 6.0},
    ],
    "dh_ext": [
        {"iteration": 19, "total_loss": 3.0, "loss_cls_fc": 1.4, "loss_box_reg_conv": 1.6},
        {"iteration": 39, "total_loss": 2.5, "loss_cls_fc": 1.0, "loss_box_reg_conv": 1.5},
        {
            "iteration": 39,
            "total_loss": 2.4,
            "loss_cls_fc": 0.9,
            "loss_box_reg_conv": 1.5,
        },  # after --resume
        {"iteration": 39, "bbox/AP": 12.0, "bbox/AP50": 25.0},
    ],
}


def _write_runs(root):
    dirs = []
    for name, rows in RUNS.items():
        os.makedirs(root / name)
        with open(root / name / "metrics.json", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        dirs.append(str(root / name))
    return dirs


def _expected(key):
    """{run: (iterations trained, values)} of `key` in RUNS, the last row of an iteration winning."""
    expected = {}
    for name, rows in RUNS.items():
        # training rows follow their 0-based iteration; the final evaluation is logged at
        # MAX_ITER itself, beyond every training row
        last_train = max(
            row["iteration"] for row in rows if not any(k.startswith("bbox/") for k in row)
        )
        points = {
            row["iteration"] + (not key.startswith("bbox/") or row["iteration"] <= last_train): row[
                key
            ]
            for row in rows
            if key in row
        }
        if points:
            expected[name] = (sorted(points), [points[i] for i in sorted(points)])
    return expected


def _drawn_pixels(path):
    image = matplotlib.image.imread(path)[..., :3]
    return (image < 0.9).any(axis=-1).mean()  # share of non-white pixels


def test_plots_every_loss_term_and_ap_column_with_the_files_values(tmp_path):
    out = tmp_path / "curves"
    written = plot_metrics_main([*_write_runs(tmp_path), "--output-dir", str(out)])
    losses, ap = written[str(out / "losses.png")], written[str(out / "ap.png")]
    assert list(losses) == ["loss_box_reg", "loss_cls", "loss_box_reg_conv", "loss_cls_fc"]
    assert list(ap) == ["bbox/AP", "bbox/AP50"]  # neither per-class APs nor total_loss or lr
    for key, drawn in [*losses.items(), *ap.items()]:
        assert drawn == _expected(key), key
    assert ap["bbox/AP"] == {
        "faster_rcnn": ([40, 60], [10.0, 15.0]),
        "dh_ext": ([40], [12.0]),
    }  # side by side
    for path in written:
        assert _drawn_pixels(path) > 0.01, path


def test_runs_without_evaluation_give_only_losses(tmp_path):
    run = tmp_path / "no_eval"
    os.makedirs(run)
    with open(run / "metrics.json", "w") as f:
        f.write(json.dumps(RUNS["faster_rcnn"][0]) + "\n")
    written = plot_runs([str(run)], str(tmp_path / "curves"))
    assert list(written) == [str(tmp_path / "curves" / "losses.png")]
    assert written[str(tmp_path / "curves" / "losses.png")]["loss_cls"] == {
        "no_eval": ([20], [1.2])
    }


def test_runs_of_the_same_folder_name_are_labelled_by_their_path(tmp_path):
    dirs = []
    for model in ("a", "b"):
        os.makedirs(tmp_path / model / "seed1")
        with open(tmp_path / model / "seed1" / "metrics.json", "w") as f:
            f.write(json.dumps(RUNS["faster_rcnn"][0]) + "\n")
        dirs.append(str(tmp_path / model / "seed1"))
    (losses,) = plot_runs(dirs, str(tmp_path / "curves")).values()
    assert list(losses["loss_cls"]) == [os.path.join("a", "seed1"), os.path.join("b", "seed1")]


def test_a_folder_without_metrics_json_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="'.*nothing' has no metrics.json"):
        plot_runs([str(tmp_path / "nothing")], str(tmp_path / "curves"))


def test_window_means_by_hand_and_printed_table(tmp_path, capsys):
    dirs = _write_runs(tmp_path)
    # faster_rcnn rows trained 20, 40, 60; window 30-60 holds 40 and 60
    assert window_means(dirs[0], 30, 60) == pytest.approx(
        {"loss_box_reg": (0.6 + 0.4) / 2, "loss_cls": (0.9 + 0.6) / 2}
    )
    # dh_ext: the resumed row of iteration 40 replaces the first one
    assert window_means(dirs[1], 40, 40) == {"loss_box_reg_conv": 1.5, "loss_cls_fc": 0.9}
    plot_metrics_main([*dirs, "--output-dir", str(tmp_path / "curves"), "--window", "30", "60"])
    out = capsys.readouterr().out
    assert "  faster_rcnn AP: 10.0 @40, 15.0 @60\n" in out and "  dh_ext AP: 12.0 @40\n" in out
    assert (
        "| run (iterations 30-60) | loss_box_reg | loss_cls | loss_box_reg_conv | loss_cls_fc |"
        in out
    )
    assert "| faster_rcnn | 0.5000 | 0.7500 | - | - |" in out
    assert "| dh_ext | - | - | 1.5000 | 0.9000 |" in out
    with pytest.raises(ValueError, match="0 <= START <= END"):
        plot_metrics_main([*dirs, "--output-dir", str(tmp_path / "c2"), "--window", "60", "30"])
