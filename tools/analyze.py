#!/usr/bin/env python
"""Analyses of a trained model that reproduce the papers' figures (see docs/ANALYSIS.md).

    python tools/analyze.py proposals --config-file configs/shapes/dh_ext.yaml \\
        --weights output/shapes/dh_ext/model_final.pth --output-dir output/analysis/dh_ext
    python tools/analyze.py fc-sensitivity --config-file ... --weights ... --output-dir ...
    python tools/analyze.py conv-sensitivity --config-file ... --weights ... --output-dir ...
    python tools/analyze.py nms-sweep --config-file configs/shapes/drcnn.yaml \\
        --nms-reg 0.7 0.8 0.85 0.9 --output-dir output/analysis/nms_sweep

Config overrides (KEY VALUE ...) go last, as for train_net.py.
"""

import argparse
import json
import logging
import os

import tqdm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from decoupled_rcnn import nms_sweep
from detcommon.analysis import iou_statistics, plots, proposals, sensitivity
from detcommon.config import build_config
from detcommon.engine import check_weights_for_eval, setup_run

logger = logging.getLogger("analyze")


def _add_model_arguments(parser, max_images=None):
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument(
        "--weights", help="trained weights (.pth); default: MODEL.WEIGHTS of the config/overrides"
    )
    parser.add_argument("--output-dir", required=True, help="where results and figures go")
    parser.add_argument(
        "--dataset", help="evaluation set (a registered name); default: DATASETS.TEST[0]"
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=max_images,
        help=f"use only the first N images of the set (default: {max_images or 'all'})",
    )
    _add_register_argument(parser, "register a COCO-format dataset under NAME first")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def _add_register_argument(parser, help):
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON_FILE", "IMAGE_DIR"),
        help=help + " (repeatable)",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "proposals",
        help="sliding-window proposals: per-head score and regressed IoU vs proposal IoU "
        "(Double-Head Fig. 2, 3, 7)",
    )
    _add_model_arguments(p)
    p.add_argument(
        "--proposals-per-box",
        type=int,
        default=400,
        help="windows per ground-truth box, spread evenly over the 20 IoU bins "
        "(default 400; the paper used about 14,000)",
    )
    p.add_argument("--batch-size", type=int, default=1024, help="windows per forward of the heads")
    p.add_argument("--seed", type=int, default=0, help="seed of the windows")
    p.add_argument(
        "--class-ap",
        metavar="FILE",
        help="per-class AP for the class-difficulty groups: metrics.json of the model's training, "
        "saved evaluation results, or a previous proposals.json; default: evaluate the model on "
        "the analysed images",
    )
    p.add_argument(
        "--no-difficulty",
        action="store_true",
        help="skip the class-difficulty groups (no evaluation needed)",
    )
    p.add_argument("--label", help="the model's name in figures (default: config file name)")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="also draw the curves of a proposals.json made for another model (repeatable)",
    )

    for name, head_kind, figure in (
        ("fc-sensitivity", "fc-head's first fc layer weights", "Fig. 4"),
        ("conv-sensitivity", "conv-head's output feature maps on real RoIs", "Appendix Fig. 8"),
    ):
        p = sub.add_parser(
            name, help=f"7x7 grid of 7x7 correlation maps of the {head_kind} (Double-Head {figure})"
        )
        _add_model_arguments(p, max_images=None if name == "fc-sensitivity" else 20)
        p.add_argument("--head", help="only this head (default: every head of that kind)")
        if name == "conv-sensitivity":
            p.add_argument(
                "--rois-per-image",
                type=int,
                default=100,
                help="RPN proposals per image, highest objectness first (default 100)",
            )

    p = sub.add_parser(
        "nms-sweep",
        help="train one model per (NMS_cls, NMS_reg) setting and tabulate AP, AP50-AP90 "
        "(Decoupled R-CNN Tables I, III)",
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="a Decoupled R-CNN config")
    p.add_argument("--output-dir", required=True, help="one sub-folder per setting, plus the table")
    p.add_argument(
        "--nms-cls",
        type=float,
        nargs="+",
        default=[0.7],
        help="MODEL.RPN.NMS_THRESH values (classification proposals; default 0.7)",
    )
    p.add_argument(
        "--nms-reg",
        type=float,
        nargs="+",
        default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95],
        help="MODEL.DECOUPLED.NMS_THRESH_REG values (regression proposals; default Table III's)",
    )
    p.add_argument("--num-gpus", type=int, default=1, help="per training, as for train_net.py")
    _add_register_argument(p, "passed to train_net.py as --dataset NAME JSON_FILE IMAGE_DIR")
    p.add_argument("--dry-run", action="store_true", help="print the training commands only")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every training")
    return parser


def _register_args(triples):
    """[[NAME, JSON, DIR], ...] -> train_net.py's `--dataset NAME JSON DIR ...` arguments."""
    return [x for triple in triples for x in ("--dataset", *triple)]


def load_model(args, with_data=True):
    """The config (OUTPUT_DIR = --output-dir), the trained model in eval mode, the evaluation
    set's name and its dataset dicts (None without `with_data`)."""
    opts = list(args.opts)
    if args.weights:
        opts += ["MODEL.WEIGHTS", args.weights]
    cfg = build_config(args.config_file, [*opts, "OUTPUT_DIR", args.output_dir], args.register_coco)
    setup_run(cfg)
    check_weights_for_eval(cfg.MODEL.WEIGHTS)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if not with_data:
        return cfg, model, dataset, None
    if dataset not in DatasetCatalog.list():
        raise ValueError(f"Dataset {dataset!r} is not registered; pass --dataset NAME")
    dicts = DatasetCatalog.get(dataset)[: args.max_images]
    logger.info(f"{type(model.roi_heads).__name__} on {len(dicts)} images of {dataset}")
    return cfg, model, dataset, dicts


def run_proposals(args):
    cfg, model, dataset, dicts = load_model(args)
    compare = {}
    for item in args.compare:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--compare takes LABEL=FILE, got {item!r}")
        with open(path) as f:
            compare[label] = json.load(f)
    records = proposals.collect_proposal_records(
        model, cfg, dicts, args.proposals_per_box, args.batch_size, args.seed
    )
    class_names = MetadataCatalog.get(dataset).thing_classes
    class_ap = None
    if args.class_ap:
        class_ap = iou_statistics.class_ap_from_file(args.class_ap, class_names)
    elif not args.no_difficulty:
        logger.info("Evaluating the model for the per-class AP of the difficulty groups")
        class_ap = proposals.evaluate_class_ap(model, cfg, dataset, dicts)
    summary = iou_statistics.summarize(records, class_ap)
    summary["model"] = {
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "roi_heads": type(model.roi_heads).__name__,
        "dataset": dataset,
        "num_images": len(dicts),
        "proposals_per_box": args.proposals_per_box,
        "seed": args.seed,
    }
    if class_ap is not None:
        summary["class_ap"] = {f"AP-{class_names[c]}": ap for c, ap in class_ap.items()}
        summary["difficulty_classes"] = {
            k: [class_names[c] for c in v] for k, v in summary["difficulty_classes"].items()
        }
    out = args.output_dir
    iou_statistics.write_json(summary, os.path.join(out, "proposals.json"))
    iou_statistics.write_csv(
        summary, os.path.join(out, "proposals_bins.csv"), os.path.join(out, "proposals_summary.csv")
    )
    label = args.label or os.path.splitext(os.path.basename(args.config_file))[0]
    summaries = {label: summary, **compare}
    figures = {"proposals.png": ["all"]}
    for prefix in ("size", "difficulty"):
        groups = [g for g in summary["groups"] if g.startswith(prefix + "/")]
        if groups:
            figures[f"proposals_by_{prefix}.png"] = groups
    for name, groups in figures.items():
        # A compared model whose file lacks these groups (e.g. no difficulty) is left out.
        drawn = {k: s for k, s in summaries.items() if set(groups) <= set(s["groups"])}
        plots.plot_proposal_curves(drawn, groups, os.path.join(out, name), title=", ".join(drawn))
    print(
        f"{'group':<20} {'head':<12} {'boxes':>6} {'pearson(score, IoU)':>20} "
        f"{'regressed IoU (IoU>=0.5)':>25}"
    )
    for group, g in summary["groups"].items():
        for head, h in g["heads"].items():
            r, reg = h.get("pearson_score_iou"), h.get("mean_reg_iou_positive")
            print(f"{group:<20} {head:<12} {g['num_gt']:>6} {_fmt(r):>20} {_fmt(reg):>25}")
    print(
        f"Wrote proposals.json, proposals_bins.csv, proposals_summary.csv, "
        f"{', '.join(figures)} to {out}"
    )


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


def _write_sensitivity(results, kind, out, title):
    for head, r in results.items():
        profile = r["mean_by_distance"]
        path = os.path.join(out, f"{kind}_sensitivity_{head}.png")
        plots.plot_correlation_grid(
            r["matrix"],
            r["resolution"],
            path,
            f"{title}, head '{head}'\nmean correlation of different cells "
            f"{profile['all']:.2f}, of neighbours {profile['1']:.2f}",
        )
        print(
            f"{head}: mean correlation between different cells by distance "
            + ", ".join(f"{d}: {v:.3f}" for d, v in profile.items())
            + f" -> {path}"
        )
    path = os.path.join(out, f"{kind}_sensitivity.json")
    iou_statistics.write_json(results, path)
    print(f"Wrote {path}")


def run_fc_sensitivity(args):
    _, model, _, _ = load_model(args, with_data=False)
    results = sensitivity.fc_sensitivity(model, args.head)
    _write_sensitivity(results, "fc", args.output_dir, "first fc layer's per-cell weights")


def run_conv_sensitivity(args):
    cfg, model, _, dicts = load_model(args)
    results = sensitivity.conv_sensitivity(model, cfg, dicts, args.rois_per_image, args.head)
    num_rois = next(iter(results.values()))["num_rois"]
    _write_sensitivity(results, "conv", args.output_dir, f"last block's output on {num_rois} RoIs")


def run_nms_sweep(args):
    # The sweep's config as train_net.py reads it: checks the datasets before any training.
    cfg = build_config(
        args.config_file, [*args.opts, "OUTPUT_DIR", args.output_dir], args.register_coco
    )
    setup_run(cfg)
    opts = [*_register_args(args.register_coco), *args.opts]  # train_net.py's, for each training
    if cfg.MODEL.PROPOSAL_GENERATOR.NAME != "DecoupledRPN":
        raise ValueError(
            "nms-sweep varies the two RPN NMS thresholds of Decoupled R-CNN, but "
            f"{args.config_file} uses MODEL.PROPOSAL_GENERATOR.NAME "
            f"{cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}, not 'DecoupledRPN' "
            "(e.g. configs/shapes/drcnn.yaml)"
        )
    rows = nms_sweep.run_sweep(
        args.config_file,
        args.nms_cls,
        args.nms_reg,
        args.output_dir,
        opts,
        args.num_gpus,
        dry_run=args.dry_run,
        progress=lambda settings: tqdm.tqdm(settings, desc="settings"),
    )
    if args.dry_run:
        return
    os.makedirs(args.output_dir, exist_ok=True)
    md, js = (os.path.join(args.output_dir, f"nms_sweep.{ext}") for ext in ("md", "json"))
    print(nms_sweep.write_table(rows, md, js) + f"Wrote {md} and {js}")
    failed = [r for r in rows if r["status"].startswith("failed")]
    if failed:
        raise SystemExit(
            f"{len(failed)} setting(s) failed: " + "; ".join(r["status"] for r in failed)
        )


COMMANDS = {
    "proposals": run_proposals,
    "fc-sensitivity": run_fc_sensitivity,
    "conv-sensitivity": run_conv_sensitivity,
    "nms-sweep": run_nms_sweep,
}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as e:  # what the user asked for does not fit the model
        parser.exit(2, f"analyze.py {args.command}: error: {e}\n")


if __name__ == "__main__":
    main()
