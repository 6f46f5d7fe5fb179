#!/usr/bin/env python
"""Makes (once) and verifies the pretrained backbone of the shapes configs; prints its path.

    python tools/pretrain_backbone.py [--name R-18-GN]

Training a shapes config whose MODEL.WEIGHTS is "shapes-pretrained://R-18-GN" does the same on
first use; this command does it ahead of time and shows the recipe and held-out accuracy.
"""

import argparse
import json
import logging
import os

from detcommon.pretrain import RECIPES, ensure_pretrained


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="R-18-GN", choices=sorted(RECIPES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    path = ensure_pretrained(args.name)
    with open(os.path.splitext(path)[0] + ".json") as f:
        print(json.dumps(json.load(f), indent=1))
    print(path)


if __name__ == "__main__":
    main()
