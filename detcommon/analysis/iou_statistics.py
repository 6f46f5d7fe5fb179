"""
Statistics of the sliding-window analysis: per IoU bin mean and std of each head's class score
and of the IoU of its regressed box, Pearson correlation of score and IoU, for all boxes and for
groups of boxes (COCO size groups, thirds of classes by AP); JSON and CSV output.
"""

import csv
import json
import math
from typing import Dict, Optional, Sequence

import numpy as np

from .proposals import NUM_BINS, ProposalRecords, iou_bins

__all__ = [
    "binned_mean_std",
    "pearson",
    "size_groups",
    "difficulty_groups",
    "class_ap_from_file",
    "summarize",
    "jsonable",
    "write_json",
    "write_csv",
]

# COCO's area ranges (pycocotools): small < 32^2 <= medium < 96^2 <= large.
SIZE_GROUPS = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, math.inf)}
DIFFICULTY_GROUPS = ("hard", "medium", "easy")  # thirds of the classes by increasing AP
# Proposals at least this close to their box are the ones a head is trained to regress.
POSITIVE_IOU = 0.5


def binned_mean_std(ious: np.ndarray, values: np.ndarray, num_bins: int = NUM_BINS):
    """
    Args:
        ious: (N,) proposal IoUs, binned by :func:`iou_bins`.
        values: (N,) a quantity per proposal.

    Returns:
        count (num_bins,) int, mean and population std (num_bins,) of `values` per bin (NaN for
        an empty bin).
    """
    bins = iou_bins(ious, num_bins)
    values = np.asarray(values, dtype=np.float64)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(bins, weights=values, minlength=num_bins) / count
        square = np.bincount(bins, weights=values**2, minlength=num_bins) / count
    return count, mean, np.sqrt(np.maximum(square - mean**2, 0))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (N,) arrays; NaN when either is constant or N < 2."""
    if len(x) < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):  # constant input: NaN, no warning
        return float(np.corrcoef(x, y)[0, 1])


def size_groups(gt_area: np.ndarray) -> Dict[str, np.ndarray]:
    """(G,) areas -> {"small" | "medium" | "large": (G,) bool}, COCO's rule."""
    return {name: (gt_area >= lo) & (gt_area < hi) for name, (lo, hi) in SIZE_GROUPS.items()}


def difficulty_groups(gt_class: np.ndarray, class_ap: Dict[int, float]) -> Dict[str, dict]:
    """
    Thirds of the classes by AP (hard: lowest), as equal as `np.array_split` makes them;
    classes without an AP (NaN) are left out.

    Returns:
        {"hard" | "medium" | "easy": {"classes": [class ids], "mask": (G,) bool}}.
    """
    ranked = sorted((ap, c) for c, ap in class_ap.items() if not math.isnan(ap))
    thirds = np.array_split(np.array([c for _, c in ranked], dtype=np.int64), 3)
    return {
        name: {"classes": third.tolist(), "mask": np.isin(gt_class, third)}
        for name, third in zip(DIFFICULTY_GROUPS, thirds)
    }


def _flatten(tree, prefix=""):
    """Nested dicts -> {"a/b/c": leaf}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def class_ap_from_file(path: str, class_names: Sequence[str]) -> Dict[int, float]:
    """
    Per-class AP ("AP-<class name>" keys, as Detectron2's COCOEvaluator reports them) from a
    JSON file: evaluation results ({"bbox": {...}}), a training's metrics.json (JSON lines, the
    last line that has them) or this tool's proposals.json ("class_ap").

    Returns:
        contiguous class id -> AP.
    """
    with open(path) as f:
        text = f.read()
    try:
        records = [json.loads(text)]
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    wanted = {f"AP-{name}": c for c, name in enumerate(class_names)}
    for record in reversed(records):
        found: Dict[int, list] = {}  # class -> [(nesting depth, key, AP)]
        for key, value in _flatten(record).items():
            leaf = key.rsplit("/", 1)[-1]
            if leaf in wanted and isinstance(value, (int, float)):
                found.setdefault(wanted[leaf], []).append((key.count("/"), key, float(value)))
        if len(found) == len(wanted):
            # With several modes' results in one file, the least nested ("bbox/AP-x") wins.
            return {c: min(values)[2] for c, values in found.items()}
    raise ValueError(
        f"{path} has no per-class AP for every class ({', '.join(wanted)}); pass the results of "
        "an evaluation (metrics.json of a training, or its returned results as JSON)"
    )


def jsonable(x):
    """NaN -> None, numpy -> Python, tuples -> lists, floats rounded to 6 decimals: for JSON."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else round(float(x), 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _head_statistics(records: ProposalRecords, head: str, mask: np.ndarray, num_bins: int) -> dict:
    ious = records.proposal_iou[mask]
    stats: Dict[str, object] = {}
    if head in records.scores:
        scores = records.scores[head][mask]
        _, stats["score_mean"], stats["score_std"] = binned_mean_std(ious, scores, num_bins)
        stats["pearson_score_iou"] = pearson(scores, ious) if len(ious) > 1 else math.nan
    if head in records.reg_ious:
        reg = records.reg_ious[head][mask]
        _, stats["reg_iou_mean"], stats["reg_iou_std"] = binned_mean_std(ious, reg, num_bins)
        positive = ious >= POSITIVE_IOU
        stats["mean_reg_iou_positive"] = reg[positive].mean() if positive.any() else math.nan
        stats["mean_reg_iou_gain_positive"] = (
            (reg - ious)[positive].mean() if positive.any() else math.nan
        )
    return stats


def summarize(
    records: ProposalRecords,
    class_ap: Optional[Dict[int, float]] = None,
    num_bins: int = NUM_BINS,
) -> dict:
    """
    The numbers of the analysis, for all boxes and per group ("size/small", ...,
    "difficulty/hard", ... when `class_ap` is given).

    Returns:
        {"bin_edges": [num_bins + 1], "heads": [...], "difficulty_classes": {...},
         "groups": {group: {"num_gt", "num_proposals", "count": [num_bins],
                            "heads": {head: {"score_mean", "score_std", "pearson_score_iou",
                                             "reg_iou_mean", "reg_iou_std",
                                             "mean_reg_iou_positive",
                                             "mean_reg_iou_gain_positive"}}}}}
        (score keys only for heads with a classifier, reg keys only for those with a
        regressor; lists per bin).
    """
    gt_masks = {"all": np.ones(len(records.gt_class), dtype=bool)}
    gt_masks.update({f"size/{k}": v for k, v in size_groups(records.gt_area).items()})
    result = {"bin_edges": np.linspace(0, 1, num_bins + 1), "groups": {}}
    if class_ap is not None:
        difficulty = difficulty_groups(records.gt_class, class_ap)
        gt_masks.update({f"difficulty/{k}": v["mask"] for k, v in difficulty.items()})
        result["difficulty_classes"] = {k: v["classes"] for k, v in difficulty.items()}
    heads = list(dict.fromkeys([*records.scores, *records.reg_ious]))
    result["heads"] = heads
    for group, gt_mask in gt_masks.items():
        mask = gt_mask[records.gt_index]
        count = np.bincount(iou_bins(records.proposal_iou[mask], num_bins), minlength=num_bins)
        result["groups"][group] = {
            "num_gt": int(gt_mask.sum()),
            "num_proposals": int(mask.sum()),
            "count": count,
            "heads": {h: _head_statistics(records, h, mask, num_bins) for h in heads},
        }
    return jsonable(result)


def write_json(data, path: str):
    """`data` through :func:`jsonable` into a JSON file."""
    with open(path, "w") as f:
        json.dump(jsonable(data), f, indent=1)


def write_csv(summary: dict, bins_path: str, summary_path: str):
    """
    Two CSV files: one row per (group, head, bin) with count, score and regressed-IoU mean/std;
    one row per (group, head) with the correlation and the regression figures.
    """
    edges = summary["bin_edges"]
    bin_keys = ["score_mean", "score_std", "reg_iou_mean", "reg_iou_std"]
    scalar_keys = ["pearson_score_iou", "mean_reg_iou_positive", "mean_reg_iou_gain_positive"]
    with open(bins_path, "w", newline="") as fb, open(summary_path, "w", newline="") as fs:
        bins_writer, summary_writer = csv.writer(fb), csv.writer(fs)
        bins_writer.writerow(["group", "head", "iou_lo", "iou_hi", "count", *bin_keys])
        summary_writer.writerow(["group", "head", "num_gt", "num_proposals", *scalar_keys])
        for group, g in summary["groups"].items():
            for head, stats in g["heads"].items():
                summary_writer.writerow(
                    [
                        group,
                        head,
                        g["num_gt"],
                        g["num_proposals"],
                        *(stats.get(k) for k in scalar_keys),
                    ]
                )
                for b, count in enumerate(g["count"]):
                    values = [(stats.get(k) or [None] * len(g["count"]))[b] for k in bin_keys]
                    bins_writer.writerow([group, head, edges[b], edges[b + 1], count, *values])
