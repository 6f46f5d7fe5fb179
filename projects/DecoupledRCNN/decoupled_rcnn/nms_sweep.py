"""
NMS-threshold study of Decoupled R-CNN (Wang et al., Tables I and III): one training per
(NMS_cls, NMS_reg) setting of the RPN's two proposal sets, then one table of their AP columns.

Each setting trains with `train_net.py` in its own OUTPUT_DIR (`cls0.70_reg0.85`, ...), always
with `--resume`: an interrupted setting continues from its last checkpoint, a finished one
(model_final.pth and a final evaluation in metrics.json) is not trained again.
"""

import itertools
import json
import logging
import os
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from detcommon.reproduce import final_metrics as final_box_metrics

__all__ = ["METRICS", "setting_dir", "sweep_settings", "final_metrics", "run_sweep", "write_table"]

logger = logging.getLogger(__name__)

# The repository of this checkout (projects/DecoupledRCNN/decoupled_rcnn/ -> ../../..): its train_net.py.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
METRICS = ["AP", "AP50", "AP60", "AP70", "AP80", "AP90"]  # the papers' columns


def setting_dir(output_dir: str, nms_cls: float, nms_reg: float) -> str:
    return os.path.join(output_dir, f"cls{nms_cls:.2f}_reg{nms_reg:.2f}")


def sweep_settings(nms_cls: Sequence[float], nms_reg: Sequence[float]) -> List[Tuple[float, float]]:
    """Every (NMS_cls, NMS_reg) pair except those with NMS_reg < NMS_cls, which Decoupled R-CNN
    refuses (the regression set is the denser one)."""
    pairs = []
    for c, r in itertools.product(nms_cls, nms_reg):
        if r < c:
            logger.warning(f"Skipping NMS_cls {c} / NMS_reg {r}: NMS_reg must be >= NMS_cls")
            continue
        pairs.append((c, r))
    return pairs


def final_metrics(run_dir: str) -> Optional[Dict[str, float]]:
    """The bbox AP columns of the last evaluation in `run_dir`/metrics.json; None until the
    training has written model_final.pth and an evaluation."""
    if not os.path.isfile(os.path.join(run_dir, "model_final.pth")):
        return None
    try:
        results = final_box_metrics(os.path.join(run_dir, "metrics.json"))
    except (OSError, ValueError, RuntimeError):  # no file, a torn line, no evaluation
        return None
    return {m: results.get(m) for m in METRICS}


def _train_command(config_file, nms_cls, nms_reg, run_dir, opts, num_gpus) -> List[str]:
    return [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        config_file,
        "--resume",
        "--num-gpus",
        str(num_gpus),
        *opts,
        "MODEL.RPN.NMS_THRESH",
        str(nms_cls),
        "MODEL.DECOUPLED.NMS_THRESH_REG",
        str(nms_reg),
        "OUTPUT_DIR",
        run_dir,
    ]


def run_sweep(
    config_file: str,
    nms_cls: Sequence[float],
    nms_reg: Sequence[float],
    output_dir: str,
    opts: Sequence[str] = (),
    num_gpus: int = 1,
    dry_run: bool = False,
    run: Callable = subprocess.run,
    progress: Callable = lambda x: x,
) -> List[dict]:
    """
    Train every setting that has not finished yet, then collect all of them.

    Args:
        opts: config overrides for every setting (dataset, schedule, ...).
        dry_run: only print the commands of the settings still to train.
        run: runs one command (`subprocess.run`'s signature), output to a log file.
        progress: wraps the list of settings (e.g. `tqdm.tqdm`).

    Returns:
        per setting {"nms_cls", "nms_reg", "output_dir", "status", "metrics"} where status is
        "finished", "failed (exit N, see <log>)" or "not run".
    """
    rows = []
    for c, r in progress(sweep_settings(nms_cls, nms_reg)):
        run_dir = setting_dir(output_dir, c, r)
        row = {"nms_cls": c, "nms_reg": r, "output_dir": run_dir, "status": "not run"}
        metrics = final_metrics(run_dir)
        if metrics is None:
            command = _train_command(config_file, c, r, run_dir, list(opts), num_gpus)
            if dry_run:
                print(" ".join(command))
            else:
                os.makedirs(run_dir, exist_ok=True)
                log = os.path.join(run_dir, "train_stdout.log")
                logger.info(f"Training NMS_cls {c} / NMS_reg {r} into {run_dir} (output: {log})")
                with open(log, "a") as f:
                    code = run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
                if code != 0:
                    row["status"] = f"failed (exit {code}, see {log})"
                metrics = final_metrics(run_dir)
        else:
            logger.info(f"NMS_cls {c} / NMS_reg {r}: already finished in {run_dir}")
        row["metrics"] = metrics
        if metrics is not None:
            row["status"] = "finished"
        rows.append(row)
    return rows


def write_table(rows: List[dict], markdown_path: str, json_path: str) -> str:
    """Write the sweep's markdown table and JSON; returns the table."""
    header = ["NMS_cls", "NMS_reg", *METRICS, "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        metrics = row["metrics"] or {}
        values = [f"{metrics[m]:.1f}" if metrics.get(m) is not None else "-" for m in METRICS]
        lines.append(
            f"| {row['nms_cls']:.2f} | {row['nms_reg']:.2f} | "
            + " | ".join(values)
            + f" | {row['status']} |"
        )
    table = "\n".join(lines) + "\n"
    with open(markdown_path, "w") as f:
        f.write(table)
    with open(json_path, "w") as f:
        json.dump(rows, f, indent=1)
    return table
