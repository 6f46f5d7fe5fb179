#!/usr/bin/env python
"""Plots the training curves of train_net.py runs side by side: every loss term (losses.png) and
bbox AP column (ap.png) of each run's metrics.json against iterations, one line per run labelled
by its folder name.

    python tools/plot_metrics.py output/shapes/faster_rcnn output/shapes/dh_ext --output-dir output/curves
"""

import argparse

from detcommon.curves import plot_runs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="OUTPUT_DIR of a train_net.py run"
    )
    parser.add_argument("--output-dir", required=True, help="directory for losses.png and ap.png")
    return parser.parse_args(argv)


def main(argv=None):
    """Writes the PNGs; returns plot_runs' {png path: {key: {run: (iterations, values)}}}."""
    args = parse_args(argv)
    written = plot_runs(args.run_dirs, args.output_dir)
    for path, panels in written.items():
        print(f"{path}: {', '.join(panels)}")
    return written


if __name__ == "__main__":
    main()
