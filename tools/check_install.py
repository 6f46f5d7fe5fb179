#!/usr/bin/env python
"""Exits 0 when this checkout is installed (`pip install -e .`) with everything it needs.

`make install` runs it to stay quick and idempotent: pip runs only when this fails.
With --verbose it prints the versions it found.
"""

import argparse
import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# Importable name -> why it is needed.
REQUIRED = {
    "torch": "PyTorch",
    "torchvision": "RoIAlign and image ops",
    "detectron2": "the framework the heads plug into",
    "fvcore": "FLOP counting and config",
    "iopath": "checkpoint IO",
    "pycocotools": "COCO evaluation",
    "cv2": "opencv-python-headless, image IO",
    "yacs": "configs",
    "tensorboard": "training event files",
    "matplotlib": "analysis plots",
    "tqdm": "progress bars",
    "pytest": "the test suite",
    "xdist": "pytest-xdist, the test suite on every core (make test)",
    "nbclient": "the test suite (runs docs/tutorial.ipynb)",
    "ipykernel": "the test suite (the tutorial's Python kernel)",
    "ruff": "make lint",
}


def own_packages(problems):
    """The packages this checkout provides (detcommon and the projects its metadata declares);
    each must resolve to a file inside this checkout."""
    try:
        from detcommon.projects import package_names

        return package_names()
    except Exception as e:  # not installed, or installed before the projects were declared
        problems.append(f"the project packages are not registered ({type(e).__name__}: {e})")
        return ["detcommon"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--torch", help="required torch version (local build tag ignored)")
    parser.add_argument("--torchvision", help="required torchvision version")
    args = parser.parse_args()
    sys.path = [p for p in sys.path if os.path.realpath(p or ".") != REPO]  # no cwd shortcut
    problems, found = [], []
    for name, why in REQUIRED.items():
        try:
            module = importlib.import_module(name)
            found.append(f"{name} {getattr(module, '__version__', '')}".strip())
        except Exception as e:  # a broken install raises more than ImportError
            problems.append(f"{name} ({why}) does not import: {e}")
    for name, wanted in (("torch", args.torch), ("torchvision", args.torchvision)):
        module = sys.modules.get(name)
        if wanted and module and module.__version__.split("+")[0] != wanted:
            problems.append(f"{name} {module.__version__} is installed, {wanted} is required")
    try:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 81:
            problems.append(f"setuptools {setuptools.__version__}: Detectron2 needs setuptools<81")
    except ImportError:
        problems.append("setuptools is missing")
    for name in own_packages(problems):
        try:
            path = os.path.realpath(importlib.import_module(name).__file__)
        except Exception as e:
            problems.append(f"{name} does not import: {e}")
            continue
        if not path.startswith(REPO + os.sep):
            problems.append(f"{name} is installed from {path}, not from this checkout {REPO}")
    if problems:
        print("Installation incomplete:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.verbose:
        print("Installed: " + ", ".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
