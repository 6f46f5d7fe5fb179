"""detcommon/analysis without a model: sliding windows, per-bin statistics, Pearson, groups, files,
figures."""

import csv
import json

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, pairwise_iou

from detcommon.analysis import iou_statistics, plots, sensitivity
from detcommon.analysis.proposals import (
    NUM_BINS,
    ProposalRecords,
    iou_bins,
    sliding_window_proposals,
)
from tests.conftest import decodes_and_not_blank

torch.set_num_threads(1)

GT = torch.tensor(
    [
        [10.0, 12.0, 50.0, 40.0],  # medium box
        [100.0, 100.0, 103.0, 104.0],  # 3 x 4 px
        [0.0, 0.0, 160.0, 120.0],  # touches the image's corner
        [140.0, 90.0, 160.0, 120.0],  # touches two borders
    ]
)


@pytest.mark.parametrize("per_box", [20, 200])
def test_sliding_windows_fill_every_bin_evenly(per_box):
    boxes, gt_index, ious = sliding_window_proposals(
        GT, (120, 160), per_box, torch.Generator().manual_seed(0)
    )
    quota = per_box // NUM_BINS
    counts = np.zeros((len(GT), NUM_BINS), dtype=int)
    np.add.at(counts, (gt_index.numpy(), iou_bins(ious)), 1)
    assert (counts == quota).all()  # every bin of every box, exactly its share
    assert (np.diff(gt_index.numpy()) >= 0).all()  # ordered by box
    # The IoUs are those of the returned (clipped, non-empty) windows, inside their bin's edges.
    recomputed = pairwise_iou(Boxes(boxes), Boxes(GT)).numpy()[np.arange(len(boxes)), gt_index]
    np.testing.assert_allclose(recomputed, ious, atol=1e-6)
    edges = np.linspace(0, 1, NUM_BINS + 1)
    b = iou_bins(ious)
    assert ((ious >= edges[b]) & ((ious < edges[b + 1]) | (b == NUM_BINS - 1))).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 120).all()
    assert ious.max() <= 1 and (ious >= 0.95).sum() == len(GT) * quota


def test_sliding_windows_are_reproducible():
    a = sliding_window_proposals(GT, (120, 160), 40, torch.Generator().manual_seed(3))
    b = sliding_window_proposals(GT, (120, 160), 40, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_binned_mean_std_equals_direct_computation():
    rng = np.random.default_rng(0)
    ious = np.concatenate([rng.uniform(0, 1, 300), [0.0, 0.05, 0.95, 1.0]]).astype(np.float32)
    ious = ious[(ious < 0.4) | (ious >= 0.45)]  # leave bin 8 empty
    values = rng.uniform(0, 1, len(ious))
    count, mean, std = iou_statistics.binned_mean_std(ious, values)
    for b in range(NUM_BINS):
        lo, hi = b / NUM_BINS, (b + 1) / NUM_BINS
        inside = [
            v
            for iou, v in zip(ious.astype(np.float64), values)
            if lo <= iou < hi or (b == NUM_BINS - 1 and iou == 1)
        ]
        assert count[b] == len(inside)
        if inside:
            assert mean[b] == pytest.approx(np.mean(inside), abs=1e-12)
            assert std[b] == pytest.approx(np.std(inside), abs=1e-9)
        else:
            assert b == 8 and np.isnan(mean[b]) and np.isnan(std[b])


def test_pearson_equals_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=500)
    y = 0.3 * x + rng.normal(size=500)
    assert iou_statistics.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert iou_statistics.pearson(x, -2 * x + 1) == pytest.approx(-1)
    assert np.isnan(iou_statistics.pearson(x, np.ones(500)))


def test_groups_follow_coco_areas_and_ap_thirds():
    groups = iou_statistics.size_groups(np.array([10.0, 32**2 - 1, 32**2, 96**2 - 1, 96**2, 1e6]))
    assert groups["small"].tolist() == [True, True, False, False, False, False]
    assert groups["medium"].tolist() == [False, False, True, True, False, False]
    assert groups["large"].tolist() == [False, False, False, False, True, True]
    ap = {0: 50.0, 1: 10.0, 2: 90.0, 3: 30.0, 4: 70.0, 5: float("nan")}
    difficulty = iou_statistics.difficulty_groups(np.array([0, 1, 2, 3, 4, 5]), ap)
    assert difficulty["hard"]["classes"] == [1, 3]
    assert difficulty["medium"]["classes"] == [0, 4]
    assert difficulty["easy"]["classes"] == [2]
    assert difficulty["hard"]["mask"].tolist() == [False, True, False, True, False, False]


def _records():
    """Two boxes (class 0 small, class 1 large), 6 windows; head "a" scores and regresses,
    head "b" only scores."""
    return ProposalRecords(
        proposal_iou=np.array([0.1, 0.12, 0.6, 0.9, 0.55, 0.97], dtype=np.float32),
        gt_index=np.array([0, 0, 0, 1, 1, 1]),
        gt_class=np.array([0, 1]),
        gt_area=np.array([20.0**2, 200.0**2]),
        scores={
            "a": np.array([0.1, 0.3, 0.5, 0.7, 0.6, 0.9]),
            "b": np.array([0.2, 0.2, 0.4, 0.1, 0.5, 0.3]),
        },
        reg_ious={"a": np.array([0.2, 0.1, 0.7, 0.95, 0.6, 0.9])},
    )


def test_summary_equals_direct_computation(tmp_path):
    records = _records()
    summary = iou_statistics.summarize(records, class_ap={0: 20.0, 1: 80.0, 2: 50.0})
    assert summary["heads"] == ["a", "b"]
    assert summary["difficulty_classes"] == {"hard": [0], "medium": [2], "easy": [1]}
    everything = summary["groups"]["all"]
    assert everything["count"][2] == 2 and everything["count"][11] == 1
    a = everything["heads"]["a"]
    assert a["score_mean"][2] == pytest.approx(0.2) and a["score_std"][2] == pytest.approx(0.1)
    assert a["score_mean"][5] is None  # empty bin
    assert a["pearson_score_iou"] == pytest.approx(
        np.corrcoef(records.proposal_iou, records.scores["a"])[0, 1], abs=1e-6
    )
    assert a["mean_reg_iou_positive"] == pytest.approx(np.mean([0.7, 0.95, 0.6, 0.9]))
    assert a["mean_reg_iou_gain_positive"] == pytest.approx(
        np.mean([0.7 - 0.6, 0.95 - 0.9, 0.6 - 0.55, 0.9 - 0.97]), abs=1e-6
    )
    assert "reg_iou_mean" not in everything["heads"]["b"]
    large = summary["groups"]["size/large"]
    assert large["num_gt"] == 1 and large["num_proposals"] == 3
    assert large["heads"]["b"]["pearson_score_iou"] == pytest.approx(
        np.corrcoef([0.9, 0.55, 0.97], [0.1, 0.5, 0.3])[0, 1], abs=1e-5
    )
    assert summary["groups"]["difficulty/hard"]["num_proposals"] == 3
    assert summary["groups"]["size/medium"]["num_gt"] == 0  # an empty group stays well-formed

    iou_statistics.write_json(summary, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == summary  # no NaN in the JSON
    iou_statistics.write_csv(summary, tmp_path / "bins.csv", tmp_path / "summary.csv")
    bins = list(csv.DictReader(open(tmp_path / "bins.csv")))
    assert len(bins) == len(summary["groups"]) * 2 * NUM_BINS
    row = next(r for r in bins if r["group"] == "all" and r["head"] == "a" and r["iou_lo"] == "0.1")
    assert float(row["score_mean"]) == pytest.approx(0.2) and row["count"] == "2"
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert {(r["group"], r["head"]) for r in rows} >= {("all", "a"), ("difficulty/easy", "b")}


def test_class_ap_from_files(tmp_path):
    names = ["circle", "square"]
    lines = [
        {"iteration": 9, "total_loss": 1.0},
        {
            "bbox/AP": 40.0,
            "bbox/AP-circle": 30.0,
            "bbox/AP-square": 50.0,
            "fused/bbox/AP-circle": 1.0,
            "fused/bbox/AP-square": 2.0,
        },
        {"iteration": 10, "total_loss": 0.9},
    ]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines))
    assert iou_statistics.class_ap_from_file(tmp_path / "metrics.json", names) == {0: 30.0, 1: 50.0}
    (tmp_path / "results.json").write_text(
        json.dumps({"bbox": {"AP-circle": 5.0, "AP-square": 6.0}})
    )
    assert iou_statistics.class_ap_from_file(tmp_path / "results.json", names) == {0: 5.0, 1: 6.0}
    with pytest.raises(ValueError, match="no per-class AP"):
        iou_statistics.class_ap_from_file(tmp_path / "results.json", ["circle", "star"])


def test_fc_weight_correlation_is_pearson_of_cell_slices():
    fc = torch.nn.Linear(3 * 2 * 2, 5)  # C=3, 2x2 cells
    matrix = sensitivity.fc_weight_correlation(fc, (2, 2))
    w = fc.weight.detach().numpy().reshape(5, 3, 2, 2)
    cell = lambda r, c: w[:, :, r, c].ravel()  # noqa: E731
    assert matrix[1, 2] == pytest.approx(np.corrcoef(cell(0, 1), cell(1, 0))[0, 1])
    assert np.allclose(np.diag(matrix), 1) and np.allclose(matrix, matrix.T)
    with pytest.raises(ValueError, match="not C x 3 x 3"):
        sensitivity.fc_weight_correlation(fc, (3, 3))


def test_feature_map_correlation_is_mean_over_rois():
    features = torch.randn(4, 6, 2, 3)
    features[0, :, 0, 0] = 2.0  # a constant vector: undefined in RoI 0 only
    total, pairs = sensitivity.feature_map_correlation(features)
    mean = (total / pairs).numpy()
    x = features.flatten(2).numpy()
    expected = np.mean([np.corrcoef(x[r].T)[0, 5] for r in range(1, 4)])
    assert mean[0, 5] == pytest.approx(expected, abs=1e-9)
    assert pairs[0, 5] == 3 and pairs[1, 5] == 4
    with np.errstate(invalid="ignore"):  # numpy's NaN row of the constant vector in RoI 0
        expected = np.mean([np.corrcoef(x[r].T)[2, 4] for r in range(4)])
    assert mean[2, 4] == pytest.approx(expected)


def test_distance_profile():
    matrix = np.fromfunction(lambda i, j: np.abs(i - j) / 10.0, (9, 9))  # 3x3 cells
    profile = sensitivity.distance_profile(matrix, (3, 3))
    assert set(profile) == {"1", "2", "all"}
    for d in (1, 2):
        pairs = [
            matrix[i, j]
            for i in range(9)
            for j in range(9)
            if max(abs(i // 3 - j // 3), abs(i % 3 - j % 3)) == d
        ]
        assert profile[str(d)] == pytest.approx(np.mean(pairs))
    assert profile["all"] == pytest.approx(matrix[~np.eye(9, dtype=bool)].mean())


def test_plots_are_written(tmp_path):
    summary = iou_statistics.summarize(_records(), class_ap={0: 20.0, 1: 80.0})
    plots.plot_proposal_curves({"m": summary}, ["all"], tmp_path / "one.png", "title")
    plots.plot_proposal_curves(
        {"m": summary, "other": summary},
        ["size/small", "size/medium", "size/large"],
        tmp_path / "sizes.png",
    )
    matrix = np.corrcoef(np.random.default_rng(0).normal(size=(49, 30)))
    plots.plot_correlation_grid(matrix, (7, 7), tmp_path / "grid.png", "grid")
    for name in ("one.png", "sizes.png", "grid.png"):
        decodes_and_not_blank(tmp_path / name)
