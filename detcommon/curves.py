"""Training curves from the metrics.json of train_net.py runs: every loss term and bbox AP column
against iterations, several runs side by side, drawn with matplotlib's Agg backend
(`tools/plot_metrics.py`)."""

import math
import os
import statistics
from typing import Dict, List, Sequence, Tuple

from .evaluation import TABLE_ORDER
from .metrics import metrics_rows
from .reproduce import learning_curve

__all__ = ["metric_curves", "run_curves", "plot_runs", "window_means", "window_table"]

Curve = List[Tuple[int, float]]


def metric_curves(run_dir: str, prefix: str) -> Dict[str, Curve]:
    """
    {key: [(iteration, value)]} of every key of `run_dir`/metrics.json that starts with
    `prefix`, counted as `detcommon.reproduce.learning_curve` does: iterations trained (the row's
    iteration + 1), in order, a later row of the same iteration (a resumed run) winning.
    """
    points = {}
    for row in metrics_rows(run_dir):
        for key, value in row.items():
            if key.startswith(prefix):
                points.setdefault(key, {})[row["iteration"] + 1] = value
    return {key: sorted(curve.items()) for key, curve in sorted(points.items())}


def run_curves(run_dir: str) -> Dict[str, Curve]:
    """{key: [(iteration, value)]} of one run: every loss term (keys starting with "loss"), then
    the bbox AP columns of the evaluation table (bbox/AP ... bbox/APl) it has."""
    curves = metric_curves(run_dir, "loss")
    for column in TABLE_ORDER:
        curve = learning_curve(run_dir, column)
        if curve:
            curves[f"bbox/{column}"] = curve
    return curves


def _labels(run_dirs: Sequence[str]) -> List[str]:
    """Each run's folder name; the path below the runs' common folder where names repeat."""
    paths = [os.path.abspath(d) for d in run_dirs]
    if len(set(paths)) < len(paths):
        raise ValueError(f"A run directory is given twice: {list(run_dirs)}")
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath(paths)
    return [os.path.relpath(p, common) for p in paths]


def _plot_panels(
    panels: Dict[str, Dict[str, Curve]], path: str, ylabel: str
) -> Dict[str, Dict[str, tuple]]:
    """One panel per key, one line per run, saved as a PNG; returns {key: {run: (iterations,
    values)}} read back from the drawn lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), dpi=100, squeeze=False)
    drawn = {}
    for ax, (key, runs) in zip(axes.flat, panels.items()):
        for label, curve in runs.items():
            ax.plot([it for it, _ in curve], [v for _, v in curve], marker="o" if len(curve) < 30 else None,
                    ms=3, lw=1.2, label=label)  # fmt: skip
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        drawn[key] = {
            line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines()
        }
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return drawn


def plot_runs(run_dirs: Sequence[str], output_dir: str) -> Dict[str, Dict[str, Dict[str, tuple]]]:
    """
    Draws the runs' curves into `output_dir`: losses.png (a panel per loss term) and ap.png (a
    panel per bbox AP column, when a run has evaluations), one line per run labelled by its
    folder name. Returns {png path: {key: {run label: (iterations, values)}}} as drawn.
    """
    panels = {}
    for label, run_dir in zip(_labels(run_dirs), run_dirs):
        for key, curve in run_curves(run_dir).items():
            panels.setdefault(key, {})[label] = curve
    if not panels:
        raise ValueError(
            f"No loss term nor bbox AP in the metrics.json of {list(run_dirs)}: nothing to plot"
        )
    os.makedirs(output_dir, exist_ok=True)
    written = {}
    for name, ylabel, keys in (
        ("losses.png", "loss", [k for k in panels if k.startswith("loss")]),
        ("ap.png", "AP (%)", [k for k in panels if k.startswith("bbox/")]),
    ):
        if keys:
            path = os.path.join(output_dir, name)
            written[path] = _plot_panels({k: panels[k] for k in keys}, path, ylabel)
    return written


def window_means(run_dir: str, start: int, end: int, prefix: str = "loss") -> Dict[str, float]:
    """
    {key: mean} of every `prefix` key of a run over its rows at `start` to `end` iterations
    trained (both included; counted as :func:`metric_curves` does), as logged, i.e. with the
    loss weights applied. Keys without a row in the window are left out.
    """
    means = {}
    for key, curve in metric_curves(run_dir, prefix).items():
        values = [v for i, v in curve if start <= i <= end]
        if values:
            means[key] = statistics.fmean(values)
    return means


def window_table(run_dirs: Sequence[str], start: int, end: int) -> str:
    """A markdown table: one row per run (labelled as in the plots), one column per loss term,
    each the term's mean over iterations `start` to `end` (:func:`window_means`)."""
    if not 0 <= start <= end:
        raise ValueError(f"--window needs 0 <= START <= END, got {start} {end}")
    means = {label: window_means(d, start, end) for label, d in zip(_labels(run_dirs), run_dirs)}
    keys = list(dict.fromkeys(k for m in means.values() for k in m))
    if not keys:
        raise ValueError(f"No loss row between iterations {start} and {end} in {list(run_dirs)}")
    lines = [
        f"| run (iterations {start}-{end}) | " + " | ".join(keys) + " |",
        "| --- |" + " --- |" * len(keys),
    ]
    for label, m in means.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys) + " |"
        )
    return "\n".join(lines)
