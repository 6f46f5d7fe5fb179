#!/usr/bin/env python
"""The results table of the README: every model of both papers on the shapes data, over seeds.

    python tools/reproduce.py                      # 6 models x 3 seeds (make results)
    python tools/reproduce.py --models faster_rcnn dh_ext --seeds 1 2
    python tools/reproduce.py --study nms_reg      # Table III on shapes: NMS_reg 0.70 ... 0.95
    python tools/reproduce.py --study nms_reg --seeds 2 --thresholds 0.75 0.7   # some points
    python tools/reproduce.py --study fidelity     # each authors'-code fix against its old value
    python tools/reproduce.py --study fidelity --models drcnn drcnn_dh   # some of them
    python tools/reproduce.py --study schedule     # the baseline on twice the schedule + curves
    python tools/reproduce.py --study schedule --models faster_rcnn dh --factors 2 4

Each run trains `configs/shapes/<model>.yaml` with `SEED <seed>` (initialisation and data
order) into `<output-dir>/<model>/seed<seed>/`, then evaluates it on shapes_val. Finished runs
are skipped, interrupted ones resume from their last checkpoint, so the command can be stopped
and started again at any time. It writes `<results-dir>/<study>.json` (protocol, commit, every
run's metrics), `<study>.md` (mean ± std over seeds, and the papers' orderings checked) and, for
the main study, `<study>_ap_vs_iou.png`. These hold every run the study has recorded: a call on
some models, seeds or points adds its runs to the others' (`--report-only` rewrites them).
"""

import argparse
import ast
import glob
import json
import os
import sys

import yaml

from detcommon.reproduce import (
    Analysis,
    Run,
    compare,
    finished_result,
    git_commit,
    inputs_line,
    markdown_table,
    plot_ap_vs_iou,
    plot_learning_curves,
    reused_line,
    run_all,
    summarize,
    training_time_line,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["faster_rcnn", "dh", "dh_ext", "drcnn", "drcnn_cascade", "drcnn_dh"]
DH_MODES = '["conv","fc","double","fused"]'
# Extra evaluations of the final weights, per model: name -> train_net.py options.
EVALS = {
    "dh_ext": {
        "modes": ["MODEL.DOUBLE_HEAD.EVAL_MODES", DH_MODES],  # Fig. 6 (a)-(d), complementary
        "average": ["MODEL.DOUBLE_HEAD.FUSION", "average"],  # Table 3
        "max": ["MODEL.DOUBLE_HEAD.FUSION", "max"],
    },
    "drcnn": {
        # one regressor: the argmax class's box (this project's earlier inference) instead of
        # every class's own box (authors, Fast R-CNN decoding)
        "argmax": ["MODEL.DECOUPLED.TEST_CLASS_BOXES", "argmax"],
    },
    "drcnn_cascade": {
        "stage1": ["MODEL.DECOUPLED.TEST_STAGE", "1"],  # Table IV: boxes after each stage
        "stage2": ["MODEL.DECOUPLED.TEST_STAGE", "2"],
    },
}
# The papers' orderings: (a, b, column, a >= b suffices); a difference counts when it exceeds
# the larger of the two standard deviations.
TARGETS = [
    ("dh", "faster_rcnn", "AP", False),
    ("dh", "faster_rcnn", "AP75", False),
    ("dh_ext", "dh", "AP", True),
    ("drcnn", "faster_rcnn", "AP80", False),
    ("drcnn", "faster_rcnn", "AP90", False),
    ("drcnn_cascade", "drcnn", "AP90", False),
]


def proposals_summary(output_dir: str) -> dict:
    """tools/analyze.py proposals' figures over every box of the set, x100, per head: mean IoU
    of the regressed boxes of the windows of IoU >= 0.5 (paper Fig. 3, right) and Pearson
    correlation of score and IoU (Fig. 3, left)."""
    with open(os.path.join(output_dir, "proposals.json")) as f:
        heads = json.load(f)["groups"]["all"]["heads"]
    keys = {"regressed IoU": "mean_reg_iou_positive", "score-IoU Pearson": "pearson_score_iou"}
    return {
        head: {name: 100 * stats[key] for name, key in keys.items() if stats.get(key) is not None}
        for head, stats in heads.items()
    }


# Analyses of the final weights, per model: name -> Analysis.
ANALYSES = {
    "dh_ext": {
        "proposals": Analysis(
            [
                sys.executable,
                os.path.join(REPO, "tools", "analyze.py"),
                "proposals",
                "--config-file",
                "{config}",
                "--weights",
                "{weights}",
                "--output-dir",
                "{output_dir}",
                "--proposals-per-box",
                "100",
            ],
            proposals_summary,
        )
    }
}
FIG3_COLUMNS = ["regressed IoU", "score-IoU Pearson"]
# Orderings inside one Double-Head-Ext model (its extra evaluations): (a, b, column, a >= b).
MODE_TARGETS = [("fused", "average", "AP", True), ("max", "double", "AP", True)]
NMS_REG = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
# The fidelity study: per model, the option that restores this project's earlier behaviour where
# it differed from the authors' code (projects/*/README.md, "Differences from the authors' code").
FIDELITY = {
    "dh": ["MODEL.DOUBLE_HEAD.CONV_ROI_POOLING", "enlarged_clipped"],
    "dh_ext": ["MODEL.DOUBLE_HEAD.CONV_HEAD.NONLOCAL_INIT", "zero_norm"],
    "drcnn": ["MODEL.DECOUPLED.REG_LOSS_NORMALIZER", "num_samples"],
    "drcnn_cascade": ["MODEL.DECOUPLED.REG_PROPOSAL_APPEND_GT", "True"],
    "drcnn_dh": ["MODEL.DECOUPLED.REG_ROI_SCALE", "1.0"],
}


def study_runs(args):
    """The runs of the chosen study."""

    def config(model):
        return os.path.join(REPO, "configs", "shapes", f"{model}.yaml")

    def out(name, seed):
        return os.path.join(args.output_dir, name, f"seed{seed}")

    if args.study == "main":
        return [
            Run(m, s, config(m), out(m, s), list(args.opts), EVALS.get(m, {}), ANALYSES.get(m, {}))
            for s in args.seeds  # seed by seed: every model's first seed comes first
            for m in args.models
        ]
    if args.study == "nms_reg":
        return [
            Run(
                f"drcnn nms_reg {t:.2f}",
                s,
                config("drcnn"),
                out(f"drcnn_nms_reg{t:.2f}", s),
                ["MODEL.DECOUPLED.NMS_THRESH_REG", str(t), *args.opts],
            )
            for t in args.thresholds
            for s in args.seeds
        ]
    if args.study == "fidelity":
        # each authors'-code default against the project's earlier behaviour (same seeds)
        return [
            Run(
                f"{m} {' '.join(o)}",
                s,
                config(m),
                out(f"{m}_old_{o[0].split('.')[-1].lower()}", s),
                [*o, *args.opts],
            )
            for m, o in FIDELITY.items()
            if m in args.models
            for s in args.seeds
        ]
    if args.study == "schedule":
        return [
            Run(f"{m} {k}x", s, config(m), out(f"{m}_{k}x", s), [*scaled_schedule(k), *args.opts])
            for k in args.factors
            for m in args.models
            for s in args.seeds
        ]
    raise ValueError(args.study)


def scaled_schedule(factor: int):
    """Options that multiply the shapes schedule by `factor` (iterations, lr steps, evaluation
    period)."""
    solver, test = _shapes_base()["SOLVER"], _shapes_base()["TEST"]
    # yacs reads "(400, 533)" as a Python literal; plain YAML sees a string
    steps = solver["STEPS"]
    steps = ",".join(
        str(factor * x) for x in (ast.literal_eval(steps) if isinstance(steps, str) else steps)
    )
    return [
        "SOLVER.MAX_ITER", str(factor * solver["MAX_ITER"]), "SOLVER.STEPS", f"({steps},)",
        "TEST.EVAL_PERIOD", str(factor * test["EVAL_PERIOD"]),
    ]  # fmt: skip


def _shapes_base():
    with open(os.path.join(REPO, "configs", "shapes", "faster_rcnn.yaml")) as f:
        return yaml.safe_load(f)


def commit():
    return git_commit(REPO)


def protocol(args, runs):
    """The shared schedule of the shapes configs (configs/shapes/faster_rcnn.yaml), the options
    and the seeds of the recorded `runs`."""
    base = _shapes_base()
    return {
        "data": "shapes_train (600 images) -> shapes_val (120 images)",
        "weights": base["MODEL"]["WEIGHTS"],
        "solver": base["SOLVER"],
        "extra_opts": list(args.opts),
        "seeds": sorted({r["seed"] for r in runs}),
        "cpu_threads": os.cpu_count(),
    }


def results_stem(args):
    """<results-dir>/shapes[_<study>] (or --name), without extension."""
    return os.path.join(
        args.results_dir, args.name or f"shapes{'' if args.study == 'main' else '_' + args.study}"
    )


def recorded_runs(args):
    """The runs recorded in the study's committed results JSON ([] if there is none)."""
    if not os.path.isfile(results_stem(args) + ".json"):
        return []
    with open(results_stem(args) + ".json") as f:
        return json.load(f)["runs"]


def other_studies_runs(args):
    """The runs recorded in the other results JSONs under --results-dir (archived protocols'
    too): a run of this study with the same recipe and seed (e.g. a schedule study's 2x run,
    once the configs have its schedule) is not trained again."""
    runs = []
    for path in sorted(glob.glob(os.path.join(args.results_dir, "**", "*.json"), recursive=True)):
        if os.path.abspath(path) != os.path.abspath(results_stem(args) + ".json"):
            with open(path) as f:
                runs += json.load(f).get("runs", [])
    return runs


def _figures(doc):
    """A results JSON's protocol and runs, less the keys that name a run's recipe (a run
    recorded under an earlier key scheme, `Run.rekeyed`, is the same run)."""
    drop = ("recipe_key", "eval_names")
    runs = [{k: v for k, v in r.items() if k not in drop} for r in doc.get("runs", [])]
    return doc.get("protocol"), runs


def write_report(args, results, known=(), quiet=False):
    """JSON, markdown (table + orderings) and, for the main study, the AP-vs-IoU plot."""
    os.makedirs(args.results_dir, exist_ok=True)
    stem = results_stem(args)
    # the JSON, table and plots hold every recorded run of the study: earlier calls may have
    # covered other models, seeds or points, and a call on some of them leaves the others there
    # (a run trained again takes its recorded place; new runs come after the recorded ones)
    new = {(r["model"], r["seed"]): r for r in results}
    runs = [new.pop((r["model"], r["seed"]), r) for r in known] + list(new.values())
    doc = {"protocol": protocol(args, runs), "commit": commit(), "runs": runs}
    if os.path.isfile(stem + ".json"):  # same protocol and runs: the commit that wrote them stays
        with open(stem + ".json") as f:
            previous = json.load(f)
        if _figures(previous) == _figures(json.loads(json.dumps(doc))):
            doc["commit"] = previous["commit"]
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    summary = summarize(runs)
    lines = [
        "Box AP on shapes_val, mean ± std over seeds (`python tools/reproduce.py"
        f"{' --study ' + args.study if args.study != 'main' else ''}`, commit {doc['commit'][:12]}).",
        "",
        markdown_table(summary),
    ]
    if training_time_line(runs):
        lines += ["", training_time_line(runs)]
    if inputs_line(runs):
        lines += ["", inputs_line(runs)]
    if reused_line(runs):
        lines += ["", reused_line(runs)]
    if args.study == "main":
        lines += [
            "",
            "Orderings of the papers (a difference counts when it exceeds the larger std):",
            "",
        ]
        lines += [
            f"- {compare(summary, *t)}" for t in TARGETS if t[0] in summary and t[1] in summary
        ]
        modes = {}
        for name in (
            "evals/fused",
            "evals/average",
            "evals/max",
            "evals/double",
            "evals/conv",
            "evals/fc",
        ):
            modes.update(
                {name.split("/")[1]: s["dh_ext"] for s in [summarize(runs, name)] if "dh_ext" in s}
            )
        if modes:
            lines += [
                "",
                "Double-Head-Ext inference modes and fusions (same weights):",
                "",
                markdown_table(modes),
            ]
            lines += [""] + [
                f"- {compare(modes, *t)}" for t in MODE_TARGETS if t[0] in modes and t[1] in modes
            ]
        heads = summarize(
            [
                {"model": head, "metrics": figures}
                for r in runs
                if r["model"] == "dh_ext" and "proposals" in r.get("analyses", {})
                for head, figures in r["analyses"]["proposals"].items()
            ]
        )
        if heads:
            lines += [
                "",
                "Double-Head-Ext, each head on 100 windows slid around every ground-truth box of "
                "shapes_val (`tools/analyze.py proposals`, paper Fig. 3), x100: mean IoU of the "
                "regressed boxes of the windows of IoU >= 0.5, and the correlation of the score "
                "with the window's IoU:",
                "",
                markdown_table(heads, FIG3_COLUMNS),
            ]
            if {"conv", "fc"} <= set(heads):
                lines += ["", f"- {compare(heads, 'conv', 'fc', 'regressed IoU')}"]
        stages = {
            k: s["drcnn_cascade"]
            for k in ("stage1", "stage2")
            for s in [summarize(runs, "evals/" + k)]
            if "drcnn_cascade" in s
        }
        if stages:
            stages["stage3"] = summary["drcnn_cascade"]
            lines += [
                "",
                "Decoupled R-CNN cascade, boxes after each stage (same weights):",
                "",
                markdown_table(stages),
            ]
        plot_ap_vs_iou(
            summary, stem + "_ap_vs_iou.png", title=f"shapes_val, commit {doc['commit'][:12]}"
        )
        lines += ["", learning_curve_report(runs, stem, doc["commit"])]
    if args.study == "schedule":
        lines += ["", schedule_report(args, runs, stem, doc["commit"])]
    if args.study == "fidelity":
        lines += ["", fidelity_report(args, runs)]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    if quiet:
        return
    print("\n".join(lines))
    print(
        f"\nWrote {stem}.json, {stem}.md"
        + (f", {stem}_ap_vs_iou.png, {stem}_learning_curve.png" if args.study == "main" else "")
    )


def _curves(named_results):
    """name -> the learning curves of its finished runs, from (name, result) pairs."""
    curves = {}
    for name, r in named_results:
        if r.get("learning_curve"):
            curves.setdefault(name, []).append(r["learning_curve"])
    return curves


def learning_curve_report(results, stem, commit_id):
    """AP at every evaluation during training, mean ± std over seeds, as a table and a plot."""
    curves = _curves([(r["model"], r) for r in results])
    if not curves:
        return ""
    png = plot_learning_curves(
        curves, stem + "_learning_curve.png", title=f"shapes_val, commit {commit_id[:12]}"
    )
    at = summarize(
        [
            {"model": m, "metrics": {str(it): ap for it, ap in c}}
            for m, cs in curves.items()
            for c in cs
        ]
    )
    iterations = sorted({int(k) for s in at.values() for k in s})
    return "\n".join(
        [
            f"AP during training (the periodic evaluations; plot `{os.path.basename(png)}`):",
            "",
            markdown_table(at, [str(it) for it in iterations]),
        ]
    )


def main_results(args, models, seeds=(1, 2, 3)):
    """The finished main-study runs of `models` x `seeds`, from their folders or shapes.json."""
    main_args = argparse.Namespace(
        **{**vars(args), "study": "main", "seeds": list(seeds), "models": models, "name": None}
    )
    known = recorded_runs(main_args)
    return [r for r in (finished_result(run, known) for run in study_runs(main_args)) if r]


def fidelity_report(args, results):
    """Each authors'-code default (the main study's runs of the same seeds) against the earlier
    behaviour; the noise is the larger of the default's spread over every seed of the main study
    and the earlier behaviour's over its seeds."""
    models = sorted({r["model"].split(" ")[0] for r in results})
    same_seeds = {}
    for m in models:
        seeds = sorted({r["seed"] for r in results if r["model"].split(" ")[0] == m})
        same_seeds.update(summarize(main_results(args, [m], seeds)))
    return fidelity_table(same_seeds, summarize(main_results(args, models)), summarize(results))


def fidelity_table(same_seeds, all_seeds, earlier, columns=("AP", "AP75", "AP90")):
    """
    Markdown: per fidelity run and column, the authors' default on the same seeds, the earlier
    behaviour (mean over its seeds), their difference, and the two spreads: the default's std
    over all its seeds and the earlier behaviour's over its own. The difference counts when it
    exceeds the larger of the two (the earlier behaviour's spread is taken to be the default's
    while it has a single seed).

    Args:
        same_seeds, all_seeds: `summarize` of the main study's runs of the model, on the fidelity
            runs' seeds and on every seed.
        earlier: `summarize` of the fidelity runs, named "<model> <option> <value>".
    """
    lines = [
        "Authors' default (main study, same seeds) against the earlier behaviour (mean over its "
        "seeds); a difference counts when it exceeds the larger std, the default's over all its "
        "seeds or the earlier behaviour's:",
        "",
        "| model | earlier behaviour | column | default | earlier | difference | std: default "
        "(seeds) / earlier (seeds) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, stats in earlier.items():
        model, option = name.split(" ", 1)
        if model not in same_seeds:
            continue
        for c in columns:
            default, (old, old_std, old_n) = same_seeds[model][c][0], stats[c]
            std, n = all_seeds[model][c][1:]
            diff = default - old
            old_spread = f"{old_std:.1f} ({old_n})" if old_n > 1 else "- (1)"
            if n < 2:
                verdict = "not decided (the default has one seed)"
            elif abs(diff) <= max(std, old_std):  # a single seed has std 0
                verdict = "no difference"
            else:
                verdict = "authors' default better" if diff > 0 else "earlier behaviour better"
            lines.append(
                f"| {model} | `{option}` | {c} | {default:.1f} | {old:.1f} | {diff:+.1f} | "
                f"{std:.1f} ({n}) / {old_spread} | {verdict} |"
            )
    return "\n".join(lines)


def schedule_report(args, results, stem, commit_id):
    """1x (main study, every seed) against each longer schedule's final AP, and the learning
    curves of all."""
    # the 1x runs: every seed of the main study, baseline and Double-Head-Ext at least
    longer = summarize(results)  # "<model> <k>x" -> figures
    models = list(dict.fromkeys(["faster_rcnn", "dh_ext", *(n.split(" ")[0] for n in longer)]))
    one_x = main_results(args, models)
    lines = []
    if one_x:
        s1 = summarize(one_x)
        lines.append(
            "Longer schedules against the table's (a difference counts when it exceeds the "
            "larger std):\n"
        )
        for name in longer:
            m = name.split(" ")[0]
            if m in s1:
                lines.append(f"- {m}: " + compare({**s1, **longer}, name, m, "AP"))
    curves = _curves([(f"{r['model']} 1x", r) for r in one_x] + [(r["model"], r) for r in results])
    if curves:
        png = plot_learning_curves(
            curves, stem + "_learning_curve.png", title=f"commit {commit_id[:12]}"
        )
        lines.append(f"\nLearning curves: `{os.path.basename(png)}`")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--study", default="main", choices=["main", "nms_reg", "fidelity", "schedule"]
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=MODELS,
        choices=MODELS,
        help="the models of the study: main (default all six), schedule (default faster_rcnn), "
        f"fidelity (default every model with an earlier behaviour: {' '.join(FIDELITY)})",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="default: 1 2 3 (main), 1 (nms_reg, fidelity)",
    )
    parser.add_argument(
        "--factors",
        nargs="+",
        type=int,
        default=[2],
        help="schedule study: multiples of the shapes schedule to train (default 2; 4 checks "
        "whether twice the schedule is itself converged)",
    )
    parser.add_argument(
        "--thresholds",
        nargs="+",
        type=float,
        default=None,
        choices=NMS_REG,
        metavar="NMS_REG",
        help=f"nms_reg study: the points to train, in this order (default all of "
        f"{' '.join(map(str, NMS_REG))})",
    )
    parser.add_argument("--output-dir", default=os.path.join(REPO, "output", "reproduce"))
    parser.add_argument("--results-dir", default=os.path.join(REPO, "docs", "results"))
    parser.add_argument(
        "--name", default=None, help="file stem of the results (default: shapes[_<study>])"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from finished runs only"
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each finished run's periodic checkpoints (default: only model_final.pth stays)",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config options for every run, last on the line: --opts KEY VALUE ...",
    )
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = [1, 2, 3] if args.study == "main" else [1]
    if args.study == "schedule" and args.models == MODELS:
        args.models = ["faster_rcnn"]
    if args.study == "fidelity" and not set(args.models) & set(FIDELITY):
        parser.error(
            f"--study fidelity: none of --models {' '.join(args.models)} has an earlier "
            f"behaviour to compare; choose among {' '.join(FIDELITY)}"
        )
    if any(k < 2 for k in args.factors):
        parser.error(f"--factors must be 2 or more (1 is the main study), got {args.factors}")
    if args.study == "nms_reg" and args.models != MODELS:
        parser.error("--study nms_reg trains drcnn only: drop --models")
    if args.thresholds is not None and args.study != "nms_reg":
        parser.error(f"--thresholds chooses points of --study nms_reg, not of --study {args.study}")
    args.thresholds = args.thresholds or NMS_REG
    runs = study_runs(args)
    # runs recorded in the committed results count as finished: a new checkout retrains nothing
    known, elsewhere = recorded_runs(args), other_studies_runs(args)
    if args.report_only:
        results = [r for r in (finished_result(run, known, elsewhere) for run in runs) if r]
    else:
        results = run_all(
            runs,
            os.path.join(REPO, "train_net.py"),
            print_fn=lambda s: print(s, flush=True),
            known=known,
            on_result=lambda done: write_report(args, done, known, quiet=True),
            elsewhere=elsewhere,
            keep_checkpoints=args.keep_checkpoints,
        )
    write_report(args, results, known)


if __name__ == "__main__":
    main()
