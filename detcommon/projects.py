"""The project packages built on detcommon, found through the installed package's metadata.

A project declares itself once, in setup.cfg, under the entry-point group `detcommon.projects`:

    [options.entry_points]
    detcommon.projects =
        my_head = my_head:PROJECT

where `my_head.PROJECT` is a :class:`Project`. Everything that needs the list of projects reads
it from here: the config (its keys and checks), the loggers, the evaluation, the install check
and the export's tracing patch. detcommon itself never names a project.
"""

import functools
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, List, Optional

__all__ = ["ENTRY_POINT_GROUP", "Project", "projects", "package_names"]

ENTRY_POINT_GROUP = "detcommon.projects"


@dataclass(frozen=True)
class Project:
    """What a project package gives the shared code.

    Args:
        package (str): the package name (also its logger's name).
        add_config (callable): cfg -> None, declares the project's keys with their defaults.
        check_config (callable or None): cfg -> None, raises ValueError naming the key for a bad
            value or combination of the project's keys; run once per config, before anything is
            built.
        evaluation (callable or None): (cfg, model, build_evaluator) -> (model, evaluators) for
            a project's own evaluation (e.g. several inference modes in one pass), or None when
            `cfg` asks for none; `build_evaluator(cfg, dataset_name, output_folder)`.
        check_lazy_node (callable or None): (path, node, model) -> dict or None, for each
            LazyCall node of a LazyConfig's `model` (`path` its dotted key, e.g.
            "model.roi_heads"; `model` the whole cfg.model, for checks across modules): raises
            ValueError naming the lazy keys when a node of one of the project's classes holds
            a bad value or combination, and returns that node's {YAML key: lazy key}, with
            which errors of building the model name lazy keys; None for other nodes. Run
            before the model is built (detcommon.engine.lazy.validate_lazy_config and build_model),
            so it must not change the config.
        lazy_evaluation (callable or None): (model, build_evaluator) -> (model, evaluator) for
            a LazyConfig run's evaluation of one dataset, or None when the model asks for none
            (the first project's non-None answer wins, else the dataset's plain evaluator);
            `build_evaluator(subfolder or None)` gives the dataset's evaluator, writing to its
            output folder or to `subfolder` under it.
    """

    package: str
    add_config: Callable
    check_config: Optional[Callable] = None
    evaluation: Optional[Callable] = None
    check_lazy_node: Optional[Callable] = None
    lazy_evaluation: Optional[Callable] = None


@functools.lru_cache(maxsize=None)
def _load() -> tuple:
    entry_points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    found = []
    for entry in entry_points:
        project = entry.load()
        if not isinstance(project, Project):
            raise TypeError(
                f"Entry point {entry.name} = {entry.value} of group {ENTRY_POINT_GROUP!r} must be a "
                f"detcommon.projects.Project, got {type(project).__name__}"
            )
        found.append(project)
    if not found:
        raise RuntimeError(
            f"No project package is registered (entry points {ENTRY_POINT_GROUP!r}): install this "
            "repository with `pip install -e .` (or `make install`), which declares them."
        )
    return tuple(found)


def projects() -> List[Project]:
    """Every installed project, by name."""
    return list(_load())


def package_names() -> List[str]:
    """ "detcommon" and every project package: the loggers, the install check and the export's
    tracing patch cover these."""
    return ["detcommon", *(p.package for p in projects())]
