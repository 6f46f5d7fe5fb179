"""A resumable runner for a results table: models x seeds, trained and evaluated by train_net.py,
summarised as mean ± std over seeds.

Each run lives in `<root>/<model>/seed<k>/`: Detectron2's own output (checkpoints, metrics.json,
config.yaml), the run's log `train.log`, and `result.json` once the run has finished. A run
whose `result.json` records the same recipe is skipped; one with checkpoints but no result
resumes from its last checkpoint (`--resume`); a finished run whose recipe changed is refused,
naming the folder, instead of being silently mixed with new runs. When a run starts, the
SHA-256 of the weights it starts from (`MODEL.WEIGHTS`) goes into `inputs.json` and from there
into its result: a cached pretrained backbone made again on another machine need not be the same
file, and a reader of the table can see which runs share one.

The recipe is what the run trains with, not how it is spelled: the keys where the merged config
(file, its `_BASE_` chain, options) differs from the project's defaults, and the seed. A config
file that sets SOLVER.MAX_ITER 2400 and another config with the option `SOLVER.MAX_ITER 2400`
have one recipe, so a result of one counts for the other. Extra evaluations of the final weights
and analyses change no training: they are not part of the recipe, and a finished run that lacks
one gets it on the next call (where its weights are still there).
"""

import hashlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, Optional, Sequence

import yaml
from detectron2.utils.file_io import PathManager

from .data.shapes import sha256_file
from .evaluation import IOU_THRESHOLDS, TABLE_ORDER
from .metrics import metrics_rows

__all__ = [
    "Run",
    "Analysis",
    "run_all",
    "read_result",
    "finished_result",
    "git_commit",
    "summarize",
    "markdown_table",
    "plot_ap_vs_iou",
    "learning_curve",
    "plot_learning_curves",
    "compare",
    "training_seconds",
    "training_time_line",
    "record_inputs",
    "inputs_line",
    "reused_line",
    "IOU_COLUMNS",
]

logger = logging.getLogger(__name__)

IOU_COLUMNS = [f"AP{round(t * 100)}" for t in IOU_THRESHOLDS]
RESULT_FILE = "result.json"
INPUTS_FILE = "inputs.json"
# Detectron2's periodic checkpoints, model_<iteration, 7 digits>.pth (not model_final / model_best)
_PERIODIC_CHECKPOINT = re.compile(r"model_\d{7}\.pth")
_PROGRESS = re.compile(r"eta: (\S+)\s+iter: (\d+)")
_LOG_TIME = re.compile(r"^\[(\d\d/\d\d \d\d:\d\d:\d\d)\] ")
# the first line each train_net.py process writes to log.txt (detectron2's default_setup)
_PROCESS_START = "detectron2 INFO: Rank of current process"


@dataclass
class Analysis:
    """A command run on a finished run's final weights, and the summary of its output the run's
    result keeps (e.g. tools/analyze.py)."""

    # argv; "{config}", "{weights}" and "{output_dir}" are filled in, the run's options appended
    command: List[str]
    read: Callable[[str], dict]  # the command's output folder -> the summary kept


@dataclass
class Run:
    """One training run, its evaluations and its analyses."""

    model: str  # a name for the table, e.g. the config's file name without .yaml
    seed: int
    config_file: str
    output_dir: str
    opts: List[str] = field(default_factory=list)  # train_net.py options for training and eval
    # extra `--eval-only` passes of the final weights: name -> options. Not part of the recipe
    # (they change no training): a finished run without one gets it on the next call.
    evals: Dict[str, List[str]] = field(default_factory=dict)
    # commands on the final weights: name -> Analysis. Not part of the recipe either.
    analyses: Dict[str, Analysis] = field(default_factory=dict)

    def recipe(self) -> dict:
        return {"config": changed_settings(self.config_file, self.opts), "seed": self.seed}

    def recipe_key(self) -> str:
        return _hash(self.recipe())

    def recipe_keys(self) -> tuple:
        """This recipe's key, then the keys earlier results carry, which also hashed this run's
        extra evaluations: the recipe and `evals` (until commit 7144d44), and before that the
        config files as written and the options as given. A result with any of them is this
        run's."""
        spelled = {
            "config": _config_chain(self.config_file),
            "opts": list(self.opts),
            "seed": self.seed,
            "evals": self.evals,
        }
        return self.recipe_key(), _hash({**self.recipe(), "evals": self.evals}), _hash(spelled)

    def rekeyed(self, result: dict) -> dict:
        """`result` (one of `recipe_keys`) under this recipe's key; a result recorded under an
        earlier key ran exactly this run's extra evaluations."""
        if result.get("recipe_key") == self.recipe_key():
            return result
        return {"eval_names": list(self.evals), **result, "recipe_key": self.recipe_key()}


def _hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# set per run by the runner, or by the machine: not part of a recipe
_NOT_RECIPE = {"OUTPUT_DIR", "SEED", "MODEL.DEVICE"}


def changed_settings(config_file: str, opts: Sequence[str] = ()) -> Dict[str, str]:
    """{"SOLVER.MAX_ITER": "2400", ...}: every key where the run's config (detcommon.config
    .build_config of the file and options) differs from the project's defaults, values as
    repr; OUTPUT_DIR, SEED and MODEL.DEVICE left out."""
    from .config import build_config, get_project_cfg

    def flat(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    default = dict(flat(get_project_cfg()))
    return {
        key: repr(value)
        for key, value in flat(build_config(config_file, opts))
        if key not in _NOT_RECIPE and (key not in default or default[key] != value)
    }


def _config_chain(path: str) -> List[dict]:
    """A YAML config and every `_BASE_` it extends, parsed (comments do not count), base last."""
    chain = []
    while path:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        chain.append(values)
        base = values.get("_BASE_")
        path = os.path.join(os.path.dirname(path), base) if base else None
    return chain


def git_commit(repo: str) -> str:
    """HEAD's hash in `repo`, with "-dirty" when tracked files differ from it, other than
    markdown and docs/results/ (documentation and results files change no result; a results
    runner rewrites them while it runs)."""

    def git(*args):
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return proc.stdout.strip()

    head = git("rev-parse", "HEAD") or "unknown"
    changed = git(
        "status", "--porcelain", "--untracked-files=no", "--", ".",
        ":(exclude)*.md", ":(exclude)docs/results",
    )  # fmt: skip
    return head + ("-dirty" if changed else "")


def training_seconds(output_dir: str) -> Optional[float]:
    """
    Wall seconds the run's train_net.py processes took (setup, training, periodic and final
    evaluations), summed over every start of the run (it appends to one log.txt when resumed):
    each process from its first to its last timestamped line, so the time between a killed
    process and its resume is not counted. None if the folder has no log.txt.
    """
    path = os.path.join(output_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    processes = []  # [first, last] timestamp of each process
    with open(path, errors="replace") as f:
        for line in f:
            m = _LOG_TIME.match(line)
            if m is None:
                continue
            # log.txt has no year; a process spanning New Year's Eve counts from Jan 1st
            t = datetime.strptime("2000/" + m.group(1), "%Y/%m/%d %H:%M:%S")
            if not processes or _PROCESS_START in line or t < processes[-1][1]:
                processes.append([t, t])
            processes[-1][1] = t
    return sum((last - first).total_seconds() for first, last in processes)


def training_time_line(results: Sequence[dict]) -> str:
    """One markdown line: each model's training wall time (`train_seconds`), mean and range
    over its runs, in minutes; "" when no result has one."""
    minutes: Dict[str, List[float]] = {}
    for r in results:
        if r.get("train_seconds") is not None:
            minutes.setdefault(r["model"], []).append(r["train_seconds"] / 60)
    if not minutes:
        return ""
    parts = [
        f"{m} {statistics.fmean(v):.1f}" + (f" ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else "")
        for m, v in minutes.items()
    ]
    return (
        "Training wall time per run, minutes (train_net.py's log.txt, summed over resumes; mean "
        "and range over seeds): " + ", ".join(parts)
    )


def record_inputs(run: Run) -> Optional[dict]:
    """
    What the run starts from, written once into `<run>/inputs.json` when it first trains and
    read back afterwards: {"weights": MODEL.WEIGHTS, "weights_sha256": ...} ("weights" None
    when it starts from scratch). A run resumed from a checkpoint keeps its first record (its
    checkpoint, not the initial weights, holds the model); a run started before records were
    kept has none (None).
    """
    path = os.path.join(run.output_dir, INPUTS_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    if os.path.isfile(os.path.join(run.output_dir, "last_checkpoint")):
        return None
    from .config import build_config

    weights = build_config(run.config_file, run.opts).MODEL.WEIGHTS or None
    inputs = {"weights": weights, "weights_sha256": None}
    if weights is not None:  # shapes-pretrained:// makes the cached backbone on first use
        inputs["weights_sha256"] = sha256_file(PathManager.get_local_path(weights))
    os.makedirs(run.output_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(inputs, f, indent=1)
    return inputs


def inputs_line(results: Sequence[dict]) -> str:
    """One markdown line: which runs started from which weights file (first 8 hex digits of its
    SHA-256), and which runs have no record; "" when no run has one."""
    if all(r.get("inputs") is None for r in results):
        return ""
    groups: Dict[str, List[str]] = {}
    for r in results:
        inputs = r.get("inputs")
        if inputs is None:
            key = "not recorded (trained before 2026-12-06)"
        elif inputs["weights"] is None:
            key = "from scratch"
        else:
            key = f"{inputs['weights']} {inputs['weights_sha256'][:8]}"
        groups.setdefault(key, []).append(f"{r['model']} {r['seed']}")
    parts = [f"{key}: {', '.join(runs)}" for key, runs in groups.items()]
    return "Initial weights per run (model seed; `inputs` in the JSON): " + "; ".join(parts)


def reused_line(results: Sequence[dict]) -> str:
    """One markdown line naming the runs taken from another study's run with the same recipe
    and seed (`same_run_as`), not trained again; "" when there is none."""
    parts = [
        f"{r['model']} {r['seed']} is {r['same_run_as']} {r['seed']}"
        for r in results
        if "same_run_as" in r
    ]
    if not parts:
        return ""
    return (
        "Runs of another study with the same recipe and seed, not trained again (`same_run_as` "
        "in the JSON; model seed): " + ", ".join(parts)
    )


def read_result(run: Run) -> Optional[dict]:
    """The run's result if it has finished with this recipe; None if it has not finished."""
    path = os.path.join(run.output_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if result.get("recipe_key") not in run.recipe_keys():
        raise RuntimeError(
            f"{path} was made with another recipe (config files, options or seed changed since). "
            f"Delete {run.output_dir} to retrain it, or pass another --output-dir."
        )
    if result["recipe_key"] != run.recipe_key():  # recorded under an earlier key
        result = run.rekeyed(result)
        _write_result(run, result)
    # results written before these were recorded
    if result.get("train_seconds") is None:
        result["train_seconds"] = training_seconds(run.output_dir)
    if "learning_curve" not in result and os.path.isfile(
        os.path.join(run.output_dir, "metrics.json")
    ):
        result["learning_curve"] = learning_curve(run.output_dir)
    return result


def finished_result(
    run: Run, known: Sequence[dict] = (), elsewhere: Sequence[dict] = ()
) -> Optional[dict]:
    """The run's result from its folder, else from `known` results with its model, seed and
    recipe (e.g. its study's committed results JSON), else from `elsewhere` (e.g. other studies'
    results) with its seed and recipe under another name, relabelled (its "same_run_as" keeps
    the other name); None if it has not finished."""
    result = read_result(run)
    keys = run.recipe_keys()
    if result is None:
        result = next(
            (
                r
                for r in known
                if (r["model"], r["seed"]) == (run.model, run.seed) and r.get("recipe_key") in keys
            ),
            None,
        )
        if result is not None:
            result = run.rekeyed(result)
    if result is None:
        same = [r for r in elsewhere if (r["seed"], r.get("recipe_key")) == (run.seed, keys[0])]
        if same:
            result = {**same[0], "model": run.model, "same_run_as": same[0]["model"]}
    return result


def final_metrics(metrics_json: str, prefix: str = "bbox/") -> dict:
    """The last evaluation rows of a Detectron2 metrics.json: {column: value} of `prefix` keys."""
    results = {}
    for row in metrics_rows(metrics_json):
        if f"{prefix}AP" in row:
            results = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
    if not results:
        raise RuntimeError(
            f"No {prefix}AP in {metrics_json}: the run did not finish its evaluation"
        )
    return results


def _stream(cmd: List[str], log_path: str, on_line=None) -> int:
    """Runs `cmd`, appending its output to `log_path`; calls on_line(line) for each line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", buffering=1) as log:  # line-buffered: the log follows the run
        log.write(f"\n$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for line in proc.stdout:
            log.write(line)
            if on_line:
                on_line(line)
        return proc.wait()


def _train(run: Run, train_script: str, label: str, print_fn, progress_period: float) -> None:
    log_path = os.path.join(run.output_dir, "train.log")
    resume = os.path.isfile(os.path.join(run.output_dir, "last_checkpoint"))
    cmd = [sys.executable, train_script, "--config-file", run.config_file]
    cmd += ["--resume"] if resume else []
    cmd += [*run.opts, "SEED", str(run.seed), "OUTPUT_DIR", run.output_dir]
    print_fn(f"{label}: {'resuming' if resume else 'training'} -> {run.output_dir}")
    last = [0.0]

    def on_line(line):
        m = _PROGRESS.search(line)
        if m and time.monotonic() - last[0] >= progress_period:
            last[0] = time.monotonic()
            print_fn(f"{label}: iteration {int(m.group(2)) + 1}, eta {m.group(1)}")

    code = _stream(cmd, log_path, on_line)
    if code != 0:
        raise RuntimeError(f"{label}: train_net.py exited with {code}; see {log_path}")


def _evaluate(run: Run, train_script: str, name: str, opts: List[str]) -> dict:
    """One `--eval-only` pass of the final weights; {task or mode: {column: value}}."""
    out = os.path.join(run.output_dir, "eval", name)
    cmd = [sys.executable, train_script, "--config-file", run.config_file, "--eval-only"]
    cmd += [*run.opts, *opts, "SEED", str(run.seed), "OUTPUT_DIR", out]
    cmd += ["MODEL.WEIGHTS", os.path.join(run.output_dir, "model_final.pth")]
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(run.output_dir, "train.log")
    if _stream(cmd, log_path) != 0:
        raise RuntimeError(f"evaluation {name!r} of {run.output_dir} failed; see {log_path}")
    with open(os.path.join(out, "eval_results.json")) as f:
        results = json.load(f)
    # "bbox" -> {name: ...}; "fused/bbox" (Double-Head modes) -> {"fused": ...}
    return {
        (task.rsplit("/", 1)[0] if "/" in task else name): metrics
        for task, metrics in results.items()
        if task.endswith("bbox")
    }


def _analyze(run: Run, name: str, analysis: Analysis) -> dict:
    """Runs one analysis of the run's final weights into `<run>/analysis/<name>`; its summary."""
    out = os.path.join(run.output_dir, "analysis", name)
    fill = {
        "config": run.config_file,
        "weights": os.path.join(run.output_dir, "model_final.pth"),
        "output_dir": out,
    }
    cmd = [a.format(**fill) for a in analysis.command] + list(run.opts)
    log_path = os.path.join(run.output_dir, "train.log")
    if _stream(cmd, log_path) != 0:
        raise RuntimeError(f"analysis {name!r} of {run.output_dir} failed; see {log_path}")
    return analysis.read(out)


def _write_result(run: Run, result: dict) -> None:
    tmp = os.path.join(run.output_dir, RESULT_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(run.output_dir, RESULT_FILE))


def drop_periodic_checkpoints(output_dir: str) -> List[str]:
    """Deletes the periodic checkpoints of a finished run (they only serve to resume it) when
    its `model_final.pth` is there and `last_checkpoint` names it; returns the deleted names."""
    final = os.path.join(output_dir, "model_final.pth")
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            last = f.read().strip()
    except OSError:
        return []
    if last != "model_final.pth" or not os.path.isfile(final):
        return []
    names = sorted(n for n in os.listdir(output_dir) if _PERIODIC_CHECKPOINT.fullmatch(n))
    for name in names:
        os.remove(os.path.join(output_dir, name))
    return names


def run_all(
    runs: Sequence[Run],
    train_script: str,
    print_fn=print,
    progress_period: float = 60.0,
    known: Sequence[dict] = (),
    on_result=None,
    elsewhere: Sequence[dict] = (),
    keep_checkpoints: bool = False,
) -> List[dict]:
    """
    Trains and evaluates every run not finished yet, in order, and runs the extra evaluations
    and analyses a finished run with its folder still lacks; returns every run's result
    ({"model", "seed", "metrics", "evals", "eval_names" (the extra evaluations run), "analyses",
    "seconds" of this call's training, "train_seconds" over every start of the run
    (`training_seconds`), "learning_curve" (`learning_curve`), ...}).

    Args:
        known: results recorded elsewhere (e.g. a committed results JSON); a run whose model,
            seed and recipe match one of them counts as finished, even without its folder.
        elsewhere: results under other names (e.g. other studies' JSONs); a run whose seed and
            recipe match one of them counts as finished too (`finished_result`), whatever extra
            evaluations either asks for: they change no training.
        on_result: called with the results so far after each newly finished run or analysis,
            and after a run first taken from `elsewhere` (e.g. to rewrite a report, so that
            results can be committed as they come, whenever the command is stopped).
        keep_checkpoints: keep a newly finished run's periodic checkpoints; by default only
            its final weights stay (`drop_periodic_checkpoints`; 1.6 to 2.3 GB a shapes run).
    """
    results = []
    for i, run in enumerate(runs):
        label = f"[{i + 1}/{len(runs)}] {run.model} seed {run.seed}"
        result = finished_result(run, known, elsewhere)
        if result is None:
            os.makedirs(run.output_dir, exist_ok=True)
            start = time.monotonic()
            inputs = record_inputs(run)
            _train(run, train_script, label, print_fn, progress_period)
            metrics = final_metrics(os.path.join(run.output_dir, "metrics.json"))
            result = {
                "model": run.model,
                "seed": run.seed,
                "metrics": metrics,
                "evals": {},  # filled below, name by name
                "eval_names": [],
                "seconds": round(time.monotonic() - start, 1),
                "train_seconds": training_seconds(run.output_dir),
                "learning_curve": learning_curve(run.output_dir),
                "commit": git_commit(os.path.dirname(os.path.abspath(train_script))),
                "recipe_key": run.recipe_key(),
                "inputs": inputs,
            }
            _write_result(run, result)
            if not keep_checkpoints:
                drop_periodic_checkpoints(run.output_dir)
            print_fn(
                f"{label}: AP {metrics['AP']:.1f}, trained in "
                f"{result['train_seconds'] / 60:.1f} min (this call {result['seconds'] / 60:.1f})"
            )
            fresh = True
        else:
            same = f" as {result['same_run_as']!r}" if "same_run_as" in result else ""
            print_fn(f"{label}: done before{same} (AP {result['metrics']['AP']:.1f}), skipped")
            # taken from another study for the first time: new to this study's report
            fresh = "same_run_as" in result and not any(
                "same_run_as" in r and (r["model"], r["seed"]) == (run.model, run.seed)
                for r in known
            )
            missing = [n for n in run.evals if n not in result.get("eval_names", [])]
            if missing and not os.path.isfile(os.path.join(run.output_dir, RESULT_FILE)):
                print_fn(
                    f"{label}: no weights in {run.output_dir} for the evaluations "
                    f"{', '.join(missing)}; its recorded result stays without them"
                )
        # a result known only from elsewhere (no folder, no weights) keeps what it has
        if os.path.isfile(os.path.join(run.output_dir, RESULT_FILE)):
            for name, opts in run.evals.items():
                if name not in result.get("eval_names", []):
                    print_fn(f"{label}: evaluating {name}")
                    result.setdefault("evals", {}).update(_evaluate(run, train_script, name, opts))
                    result["eval_names"] = [*result.get("eval_names", []), name]
                    _write_result(run, result)
                    fresh = True
            for name, analysis in run.analyses.items():
                if name not in result.get("analyses", {}):
                    print_fn(f"{label}: analysis {name}")
                    result.setdefault("analyses", {})[name] = _analyze(run, name, analysis)
                    _write_result(run, result)
                    fresh = True
        if fresh and on_result is not None:
            on_result([*results, result])
        results.append(result)
    return results


def _mean_std(values: List[float]):
    """(mean, sample std) of the values that are numbers (NaN: no detections), and how many
    values were given."""
    n, values = len(values), [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan"), n
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, n


def summarize(results: Sequence[dict], key: str = "metrics") -> Dict[str, dict]:
    """
    model -> {column: (mean, std, n)} over its seeds, for the `key` metrics ("metrics"), or for
    an extra evaluation ("evals/<name>"); n counts the seeds that have the column (a run may
    lack one, e.g. an evaluation lost to an interruption), so a single value shows no spread.
    """
    grouped: Dict[str, List[dict]] = {}
    for r in results:
        metrics = r["metrics"] if key == "metrics" else r.get("evals", {}).get(key.split("/", 1)[1])
        if metrics is not None:
            grouped.setdefault(r["model"], []).append(metrics)
    return {
        model: {
            c: _mean_std([m[c] for m in rows if c in m])
            for c in sorted({c for m in rows for c in m})
        }
        for model, rows in grouped.items()
    }


def _mean_pm_std(mean: float, std: float, n: int) -> str:
    """Mean and std as "12.0 ± 2.0"; the mean alone for a single seed (its spread is unknown)."""
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def markdown_table(summary: Dict[str, dict], columns: Sequence[str] = TABLE_ORDER) -> str:
    """Mean ± std over seeds per model and column (the mean alone for one seed), with the
    number of seeds."""
    lines = [
        "| model | seeds | " + " | ".join(columns) + " |",
        "| --- | --- |" + " --- |" * len(columns),
    ]
    for model, stats in summary.items():
        n = max(s[2] for s in stats.values())
        cells = [_mean_pm_std(*stats[c]) if c in stats else "-" for c in columns]
        lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(summary: Dict[str, dict], a: str, b: str, column: str, at_least: bool = False) -> str:
    """
    Whether model `a` beats `b` in `column` ("holds", "fails" or "no difference"): a difference
    counts only if it exceeds the larger of the two standard deviations, and is not decided
    while either model has a single seed. With `at_least`, "no difference" counts as holding.
    """
    (ma, sa, na), (mb, sb, nb) = summary[a][column], summary[b][column]
    diff, noise = ma - mb, max(sa, sb)
    if min(na, nb) < 2:
        verdict = "not decided (one seed, no spread)"
    elif abs(diff) <= noise:
        verdict = "holds (no difference)" if at_least else "no difference"
    else:
        verdict = "holds" if diff > 0 else "fails"
    return (
        f"{verdict}: {a} {_mean_pm_std(ma, sa, na)} vs {b} {_mean_pm_std(mb, sb, nb)} "
        f"({column}, {diff:+.1f})"
    )


def plot_ap_vs_iou(summary: Dict[str, dict], path: str, title: str = "") -> str:
    """AP at each IoU threshold 0.50 ... 0.95 per model, error bars = std over seeds; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    n = max(len(summary), 1)
    for i, (model, stats) in enumerate(summary.items()):
        # small horizontal offsets keep the error bars of different models apart
        x = [t + (i - (n - 1) / 2) * 0.004 for t in IOU_THRESHOLDS]
        y = [stats[c][0] for c in IOU_COLUMNS]
        err = [stats[c][1] for c in IOU_COLUMNS]
        ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, lw=1.2, label=model)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (%)")
    ax.set_xticks(IOU_THRESHOLDS)
    return _save(fig, ax, path, title)


def _save(fig, ax, path: str, title: str) -> str:
    """Grid, legend and title on `ax`, then `fig` written as `path` and closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def learning_curve(output_dir: str, column: str = "AP") -> List[tuple]:
    """[(iteration, bbox/<column>)] of every evaluation in a run's metrics.json, in order."""
    rows = metrics_rows(output_dir)
    # A periodic evaluation is logged at the 0-based iteration it follows (149 after the 150th);
    # the final one beyond every training row: at MAX_ITER (600 after 600), or MAX_ITER + 1 when
    # a run resumed with nothing left to train; the last training row is at MAX_ITER - 1.
    last_train = max((r["iteration"] for r in rows if f"bbox/{column}" not in r), default=-1)
    points = {
        min(r["iteration"] + 1, last_train + 1): r[f"bbox/{column}"]
        for r in rows
        if f"bbox/{column}" in r
    }
    return sorted(points.items())


def plot_learning_curves(curves: Dict[str, List[List[tuple]]], path: str, title: str = "") -> str:
    """
    AP against training iterations, one line per name: the mean over its runs (one curve per
    seed, same iterations), a band of ± one std where there are several; a PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, runs in curves.items():
        iters = sorted({it for run in runs for it, _ in run})
        values = [[dict(run).get(it) for run in runs] for it in iters]
        stats = [_mean_std([v for v in vs if v is not None]) for vs in values]
        mean = [m for m, _, _ in stats]
        line = ax.plot(iters, mean, marker="o", ms=3, lw=1.2, label=f"{name} ({len(runs)} runs)")
        if len(runs) > 1:
            ax.fill_between(
                iters, [m - s for m, s, _ in stats], [m + s for m, s, _ in stats],
                color=line[0].get_color(), alpha=0.15,
            )  # fmt: skip
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP on shapes_val (%)")
    return _save(fig, ax, path, title)
