"""TEST.BEST_CHECKPOINT_METRIC: model_best.pth holds the weights of the best periodic evaluation,
through train_net.py's Trainer, across --resume, and a metric the evaluation lacks stops."""

import json
import os

import pytest
import torch
from detectron2.utils.events import EventStorage

from detcommon.engine.checkpoint import AtomicCheckpointer, BestCheckpointer
from detcommon.reproduce import learning_curve
from tests.conftest import TINY_OPTS, run_train_net

CONFIG = "configs/shapes/faster_rcnn.yaml"


def _model(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "mode, values, best_iter, same_as",
    [
        ("max", [10.0, 30.0, 20.0], 3, "model_0000003.pth"),  # the middle one of three
        ("min", [10.0, 30.0, 20.0], 1, "model_0000001.pth"),
        (
            "max",
            [10.0, 20.0, 30.0],
            6,
            "model_final.pth",
        ),  # the evaluation after the last iteration
    ],
)
def test_keeps_the_best_of_several_evaluations(tmp_path, mode, values, best_iter, same_as):
    from detcommon.engine.train import Trainer, argument_parser, setup

    values = list(values)

    class ScriptedTrainer(Trainer):
        """Evaluations return the given bbox/AP75 values in turn."""

        @classmethod
        def test(cls, cfg, model, evaluators=None):
            return {"bbox": {"AP75": values.pop(0)}}

    cfg = setup(argument_parser().parse_args(
        ["--config-file", CONFIG, *TINY_OPTS, "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "2",
         "TEST.BEST_CHECKPOINT_METRIC", "bbox/AP75", "TEST.BEST_CHECKPOINT_MODE", mode, "OUTPUT_DIR", str(tmp_path)]
    ))  # fmt: skip
    trainer = ScriptedTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert values == []  # evaluated after iterations 2, 4 and 6
    best = _model(tmp_path / "model_best.pth")
    assert best["iteration"] == best_iter
    assert _same_weights(best["model"], _model(tmp_path / same_as)["model"])
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"  # what --resume reads


def test_train_net_keeps_the_best_evaluation_of_metrics_json(tmp_path, tiny_val):
    code, log = run_train_net(
        "--config-file", CONFIG, *tiny_val, *TINY_OPTS, "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "3",
        "DATASETS.TEST", "('tiny_val',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.BEST_CHECKPOINT_METRIC", "bbox/AP50", "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    assert code == 0, log[-3000:]
    curve = learning_curve(str(tmp_path), "AP50")  # (iterations trained, AP50) of both evaluations
    assert [it for it, _ in curve] == [3, 6]  # the last one follows iteration MAX_ITER
    trained, _ = max(
        curve, key=lambda point: point[1]
    )  # the first of equal values: the hook needs better
    assert _model(tmp_path / "model_best.pth")["iteration"] == trained - 1
    assert "Saved first model" in log


def _hook(tmp_path, start_iter, metrics_rows, mode="max"):
    """A BestCheckpointer on a one-layer model saving into tmp_path, as on a trainer resumed
    at `start_iter` whose metrics.json holds `metrics_rows`."""
    with open(tmp_path / "metrics.json", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in metrics_rows)
    hook = BestCheckpointer(
        2, AtomicCheckpointer(torch.nn.Linear(2, 1), str(tmp_path)), "bbox/AP75", mode
    )
    hook.trainer = type(
        "FakeTrainer", (), {"start_iter": start_iter, "iter": start_iter, "max_iter": 100}
    )()
    return hook


def _evaluate(hook, storage, iteration, value):
    storage.iter = hook.trainer.iter = iteration
    storage.put_scalars(**{"bbox/AP75": value}, smoothing_hint=False)
    hook._best_checking()


@pytest.mark.parametrize("mode, worse, better", [("max", 25.0, 35.0), ("min", 15.0, 5.0)])
@pytest.mark.parametrize("saved_at", [1, 5])  # before the checkpoint resumed from (3), or after it
def test_resumed_run_keeps_the_best_that_model_best_holds(tmp_path, mode, worse, better, saved_at):
    best = 30.0 if mode == "max" else 10.0
    rows = [
        {"iteration": 1, "bbox/AP75": best if saved_at == 1 else 20.0},
        {"iteration": 3, "bbox/AP75": 20.0},
        {"iteration": 3, "total_loss": 1.0},
        {"iteration": 5, "bbox/AP75": best if saved_at == 5 else 20.0},
    ]
    hook = _hook(tmp_path, start_iter=4, metrics_rows=rows, mode=mode)
    torch.save({"iteration": saved_at}, tmp_path / "model_best.pth")
    with EventStorage(4) as storage:
        hook.trainer.storage = storage
        hook.before_train()
        assert (hook.best_metric, hook.best_iter) == (best, saved_at)
        _evaluate(hook, storage, 5, worse)
        assert _model(tmp_path / "model_best.pth")["iteration"] == saved_at  # not replaced
        _evaluate(hook, storage, 7, better)
        assert _model(tmp_path / "model_best.pth")["iteration"] == 7


@pytest.mark.parametrize("start_iter, rows", [
    (0, [{"iteration": 99, "bbox/AP75": 30.0}]),  # a fresh run in the folder of an earlier one
    (100, [{"iteration": 98, "bbox/AP75": 30.0}]),  # metrics.json lacks the evaluation model_best holds
])  # fmt: skip
def test_without_a_known_best_the_first_evaluation_replaces_model_best(tmp_path, start_iter, rows):
    hook = _hook(tmp_path, start_iter=start_iter, metrics_rows=rows)
    torch.save({"iteration": 99}, tmp_path / "model_best.pth")
    with EventStorage(start_iter) as storage:
        hook.trainer.storage = storage
        hook.before_train()
        assert hook.best_metric is None
        _evaluate(hook, storage, start_iter + 1, 10.0)
    assert (
        _model(tmp_path / "model_best.pth")["iteration"] == start_iter + 1
        and hook.best_metric == 10.0
    )


def test_metric_missing_from_the_evaluation_stops_naming_the_results(tmp_path):
    hook = _hook(tmp_path, start_iter=0, metrics_rows=[])
    hook.trainer._last_eval_results = {"bbox": {"AP": 1.0, "AP50": 2.0}}
    with EventStorage(0) as storage:
        hook.trainer.storage = storage
        storage.put_scalars(**{"bbox/AP": 1.0, "bbox/AP50": 2.0}, smoothing_hint=False)
        with pytest.raises(
            ValueError,
            match=r"TEST.BEST_CHECKPOINT_METRIC 'bbox/AP75' .*\['bbox/AP', 'bbox/AP50'\]",
        ):
            hook._best_checking()
    assert not os.path.exists(tmp_path / "model_best.pth")
