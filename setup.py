#!/usr/bin/env python
"""Installs the shared `detcommon` package and every project package under projects/."""

from setuptools import find_packages, setup

# Each project keeps its package inside its own folder, as Detectron2 projects do;
# package_dir makes them importable after `pip install -e .` without PYTHONPATH.
PROJECT_PACKAGES = {
    "double_head": "projects/DoubleHead/double_head",
    "decoupled_rcnn": "projects/DecoupledRCNN/decoupled_rcnn",
}

setup(
    packages=[*find_packages(include=["detcommon", "detcommon.*"]), *PROJECT_PACKAGES],
    package_dir=PROJECT_PACKAGES,
)
