"""Reading the metrics.json that Detectron2's JSONWriter appends to in OUTPUT_DIR: one JSON object
per line (training rows with the losses and lr, evaluation rows with "bbox/AP" ...), each with
its 0-based "iteration". Everything in the project that reads a run's metrics reads it here."""

import json
import os
from typing import List

__all__ = ["metrics_rows"]


def metrics_rows(run: str) -> List[dict]:
    """The rows of `run`: a train_net.py OUTPUT_DIR or its metrics.json, in file order (a
    resumed run may repeat an iteration: the later row is the newer)."""
    path = os.path.join(run, "metrics.json") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run!r} has no metrics.json: pass the OUTPUT_DIR of a train_net.py run"
        )
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
