#!/usr/bin/env python
"""Plots the training curves of train_net.py runs side by side: every loss term (losses.png) and
bbox AP column (ap.png) of each run's metrics.json against iterations, one line per run labelled
by its folder name; each run's AP at every evaluation is printed too. With --window START END it
also prints each run's mean of every loss term over those iterations (as logged, loss weights
applied), a table to compare how far runs fit.

    python tools/plot_metrics.py output/shapes/faster_rcnn output/shapes/dh_ext --output-dir output/curves
    python tools/plot_metrics.py RUN_DIR ... --output-dir output/curves --window 2300 2400
"""

import argparse

from detcommon.curves import plot_runs, window_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="OUTPUT_DIR of a train_net.py run"
    )
    parser.add_argument("--output-dir", required=True, help="directory for losses.png and ap.png")
    parser.add_argument(
        "--window",
        nargs=2,
        type=int,
        metavar=("START", "END"),
        help="also print each run's mean loss terms over iterations START to END",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Writes the PNGs; returns plot_runs' {png path: {key: {run: (iterations, values)}}}."""
    args = parse_args(argv)
    table = window_table(args.run_dirs, *args.window) if args.window else None
    written = plot_runs(args.run_dirs, args.output_dir)
    for path, panels in written.items():
        print(f"{path}: {', '.join(panels)}")
        for run, (iterations, values) in panels.get("bbox/AP", {}).items():
            print(f"  {run} AP: " + ", ".join(f"{v:.1f} @{i}" for i, v in zip(iterations, values)))
    if table:
        print(table)
    return written


if __name__ == "__main__":
    main()
