#!/usr/bin/env python
"""`make demo`: trains the FPN baseline and Decoupled R-CNN with cascaded regression on the embedded
shapes data with the results protocol (pretrained shapes backbone, configs/shapes/) on a fifth of
its schedule (480 of 2400 iterations), so it fits in about 15 minutes on 2 CPU cores, evaluates both
on shapes_val, draws the last model's detections on a validation image with DefaultPredictor, and
prints the AP table and the path. The first run also makes the pretrained backbone (once, cached;
see README). Double-Head-Ext overtakes the baseline only late in the schedule, so at this length
the demo's ordering would not be the results' (README, "Two commands"); `--models faster_rcnn
dh_ext` trains it anyway.

    python tools/run_demo.py --output-dir output/demo [--models faster_rcnn drcnn_cascade] [--max-iter N]
"""

import argparse
import os
import subprocess
import sys
import time

from detcommon.evaluation import TABLE_ORDER
from detcommon.reproduce import final_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COLUMNS = TABLE_ORDER


def markdown_table(rows):
    """rows: list of (name, {column: value}, seconds) -> markdown table string."""
    lines = [
        "| model | " + " | ".join(COLUMNS) + " | train+eval (s) |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for name, ap, seconds in rows:
        lines.append(
            f"| {name} | " + " | ".join(f"{ap[c]:.1f}" for c in COLUMNS) + f" | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["faster_rcnn", "drcnn_cascade"],
        help="config names under configs/shapes/",
    )
    parser.add_argument(
        "--max-iter",
        type=int,
        default=480,
        help="schedule length, lr steps at 2/3 and 8/9 as in the configs (0: the configs' own)",
    )
    args = parser.parse_args()

    rows = []
    for name in args.models:
        config = os.path.join(REPO, "configs", "shapes", f"{name}.yaml")
        out = os.path.join(args.output_dir, name)
        opts = ["OUTPUT_DIR", out, "TEST.EVAL_PERIOD", "0"]  # one evaluation, at the end
        if args.max_iter:
            opts += [
                "SOLVER.MAX_ITER",
                str(args.max_iter),
                "SOLVER.STEPS",
                f"({args.max_iter * 2 // 3}, {args.max_iter * 8 // 9})",
                "SOLVER.CHECKPOINT_PERIOD",
                str(args.max_iter),
            ]
        print(f"\n=== Training {name} ({config}) -> {out}", flush=True)
        start = time.time()
        subprocess.run(
            [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config, *opts],
            check=True,
        )
        rows.append((name, final_metrics(os.path.join(out, "metrics.json")), time.time() - start))

    from detcommon.data.shapes import ensure_shapes

    showcase, showcase_dir = rows[-1][0], os.path.join(args.output_dir, rows[-1][0])
    image = os.path.join(ensure_shapes("shapes_val"), "images", "00000.png")
    predictions = os.path.join(args.output_dir, "predictions")
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "demo.py"),
            "--config-file",
            os.path.join(REPO, "configs", "shapes", f"{showcase}.yaml"),
            "--input",
            image,
            "--output",
            predictions,
            "--opts",
            "MODEL.WEIGHTS",
            os.path.join(showcase_dir, "model_final.pth"),
        ],
        check=True,
    )
    drawn = [os.path.join(predictions, os.path.basename(image))]

    table = markdown_table(rows)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    print("\nBox AP on shapes_val (same schedule for every model):\n" + table)
    print(f"\n{showcase} detections drawn on a validation image: {drawn[0]}")


if __name__ == "__main__":
    main()
