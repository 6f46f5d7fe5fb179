#!/usr/bin/env python
"""Makes (once) and verifies the pretrained backbone of the shapes configs; prints its path.

    python tools/pretrain_backbone.py [--name R-18-GN]
    python tools/pretrain_backbone.py --fingerprint    # would this machine make the same bytes?

Training a shapes config whose MODEL.WEIGHTS is "shapes-pretrained://R-18-GN" does the same on
first use; this command does it ahead of time and shows the recipe, the held-out accuracy and the
machine that made the file. The bytes depend on the machine (CPU instruction set, thread count):
`--fingerprint` trains the first 10 iterations only (seconds) and prints their SHA-256 and this
machine's description, to compare with another machine's, or with the environment varied, e.g.
`OMP_NUM_THREADS=1` or `ONEDNN_MAX_CPU_ISA=AVX2` in front of the command.
"""

import argparse
import json
import logging
import os

from detcommon.pretrain import RECIPES, ensure_pretrained, fingerprint


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="R-18-GN", choices=sorted(RECIPES))
    parser.add_argument(
        "--fingerprint",
        action="store_true",
        help="print the SHA-256 of the first 10 iterations' weights and the machine; make no file",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    if args.fingerprint:
        print(json.dumps(fingerprint(RECIPES[args.name]), indent=1))
        return
    path = ensure_pretrained(args.name)
    with open(os.path.splitext(path)[0] + ".json") as f:
        print(json.dumps(json.load(f), indent=1))
    print(path)


if __name__ == "__main__":
    main()
