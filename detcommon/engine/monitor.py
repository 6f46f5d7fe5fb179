"""Each training process's own loss terms, before Detectron2 reduces them (a debugging aid).

Non-finite losses need nothing here: Detectron2's SimpleTrainer raises FloatingPointError,
naming the iteration and every loss term, before the optimizer step, so no checkpoint of that
iteration is written.
"""

import json
import os

import detectron2.utils.comm as comm
from detectron2.utils.events import get_event_storage

__all__ = ["RANK_LOSS_LOG_ENV", "log_rank_losses"]

# A directory where each rank appends its local losses, rank_losses.<rank>.jsonl.
RANK_LOSS_LOG_ENV = "DETCOMMON_RANK_LOSS_LOG"


def log_rank_losses(model):
    """With $DETCOMMON_RANK_LOSS_LOG set, adds a forward hook to the training model (DDP-wrapped
    or not) that appends this process's loss terms of every iteration to a JSON-lines file
    there. Returns the hook handle, or None when the variable is not set."""
    log_dir = os.environ.get(RANK_LOSS_LOG_ENV)
    if not log_dir:
        return None
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.join(log_dir, f"rank_losses.{comm.get_rank()}.jsonl")

    def log(module, inputs, losses):
        if module.training and isinstance(losses, dict):
            row = {
                "iteration": get_event_storage().iter,
                **{k: v.item() for k, v in losses.items()},
            }
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")

    return model.register_forward_hook(log)
