"""Continuing a training run from its ``last.pt`` (``--resume``), the same way for every trainer that keeps an
optimiser, a learning-rate schedule, the epoch, the best validation score and the history in the checkpoint."""

from __future__ import annotations

import torch
from torch import nn


def restore_run(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state_dict: dict[str, torch.Tensor],
    extra: dict,
) -> tuple[int, float, list[dict]]:
    """Load the saved weights (as float32: checkpoints may store float16), optimiser and schedule states.

    Returns:
        the epoch to start from, the best validation score so far, and the history of finished epochs.
    """
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    return extra["epoch"] + 1, extra["best_score"], extra["history"]
