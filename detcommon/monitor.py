"""A watch on the loss terms every training process computes, before they are reduced."""
import json
import os

import detectron2.utils.comm as comm
import torch
from detectron2.utils.events import get_event_storage

__all__ = ["RANK_LOSS_LOG_ENV", "watch_losses"]

# Debugging aid: a directory where each rank appends its local losses, rank_losses.<rank>.jsonl.
RANK_LOSS_LOG_ENV = "DETCOMMON_RANK_LOSS_LOG"


def watch_losses(model):
    """Adds a forward hook to the training model (DDP-wrapped or not) that raises
    FloatingPointError, naming the iteration and the loss terms, as soon as a loss term of this
    process is NaN or inf: before the backward pass and the optimizer step, so the weights and
    the checkpoints stay as they were. With $DETCOMMON_RANK_LOSS_LOG set it also appends this
    process's losses of every iteration to a JSON-lines file there. Returns the hook handle."""
    log_dir = os.environ.get(RANK_LOSS_LOG_ENV)
    rank = comm.get_rank()
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)

    def check(module, inputs, losses):
        if not module.training or not isinstance(losses, dict):
            return
        iteration = get_event_storage().iter
        finite = torch.stack([v.detach().float() for v in losses.values()]).isfinite().tolist()
        if not all(finite):
            bad = ", ".join(f"{k}={v.item()}" for (k, v), ok in zip(losses.items(), finite) if not ok)
            raise FloatingPointError(
                f"Non-finite loss at iteration {iteration} (rank {rank}): {bad}. Training stopped "
                "before this iteration's optimizer step; no checkpoint was written for it. Resume "
                "from the last checkpoint with --resume, e.g. with a lower SOLVER.BASE_LR or "
                "SOLVER.CLIP_GRADIENTS.ENABLED True."
            )
        if log_dir:
            row = {"iteration": iteration, **{k: v.item() for k, v in losses.items()}}
            with open(os.path.join(log_dir, f"rank_losses.{rank}.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")

    return model.register_forward_hook(check)
