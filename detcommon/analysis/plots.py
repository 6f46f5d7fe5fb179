"""Figures of the analyses, drawn with matplotlib's Agg backend (no display needed)."""

from typing import Dict, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

__all__ = ["plot_proposal_curves", "plot_correlation_grid"]

_GROUP_TITLES = {
    "all": "all objects",
    "size/small": "small objects",
    "size/medium": "medium objects",
    "size/large": "large objects",
    "difficulty/hard": "hard classes (lowest AP)",
    "difficulty/medium": "medium classes",
    "difficulty/easy": "easy classes (highest AP)",
}


def _values(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=np.float64)


def _band(ax, x, mean, std, label, color):
    mean, std = _values(mean), _values(std)
    ax.plot(x, mean, "-o", markersize=2.5, color=color, label=label)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)


def plot_proposal_curves(
    summaries: Dict[str, dict], groups: Sequence[str], path: str, title: str = ""
):
    """
    Double-Head's Fig. 2/3 layout: per group, the mean (std band) class score of each head vs
    the proposal IoU, and the IoU of its regressed box vs the proposal IoU (diagonal: no
    regression). One group: the two panels side by side; several: a column per group.

    Args:
        summaries: model label -> :func:`..iou_statistics.summarize` result; with one model the
            curves are named by head, else by "label head".
        groups: keys of summary["groups"], one column each.
    """
    columns = len(groups)
    if columns == 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes = np.array(axes).reshape(2, 1)
    else:
        fig, axes = plt.subplots(2, columns, figsize=(3.6 * columns, 6.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for column, group in enumerate(groups):
        score_ax, reg_ax = axes[0, column], axes[1, column]
        curve = 0
        for label, summary in summaries.items():
            edges = np.asarray(summary["bin_edges"])
            centers = (edges[:-1] + edges[1:]) / 2
            stats = summary["groups"][group]
            for head, h in stats["heads"].items():
                name = head if len(summaries) == 1 else f"{label} {head}"
                color = colors[curve % len(colors)]
                curve += 1
                if "score_mean" in h:
                    r = h["pearson_score_iou"]
                    legend = f"{name} (r={r:.2f})" if r is not None else name
                    _band(score_ax, centers, h["score_mean"], h["score_std"], legend, color)
                if "reg_iou_mean" in h:
                    _band(reg_ax, centers, h["reg_iou_mean"], h["reg_iou_std"], name, color)
        reg_ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="no regression")
        group_title = _GROUP_TITLES.get(group, group)
        num_gt = next(iter(summaries.values()))["groups"][group]["num_gt"]
        score_ax.set_title(f"classification: {group_title} ({num_gt} boxes)", fontsize=9)
        reg_ax.set_title(f"localization: {group_title}", fontsize=9)
        score_ax.set_ylabel("score of the ground-truth class")
        reg_ax.set_ylabel("IoU of the regressed box")
        for ax in (score_ax, reg_ax):
            ax.set_xlabel("proposal IoU")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_correlation_grid(matrix: np.ndarray, resolution: Tuple[int, int], path: str, title: str):
    """
    Double-Head's Fig. 4 layout: for each of the H x W cells, an H x W map of its correlation
    with every cell, the maps placed where their cell lies.

    Args:
        matrix: (H*W, H*W) correlations between cells, row-major cell order.
        resolution: (H, W).
    """
    h, w = resolution
    gap = 1
    mosaic = np.full((h * (h + gap) - gap, w * (w + gap) - gap), np.nan)
    for cell in range(h * w):
        r, c = divmod(cell, w)
        top, left = r * (h + gap), c * (w + gap)
        mosaic[top : top + h, left : left + w] = matrix[cell].reshape(h, w)
    fig, ax = plt.subplots(figsize=(6, 5.4))
    cmap = plt.get_cmap("coolwarm").with_extremes(bad="white")
    image = ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Pearson correlation")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
