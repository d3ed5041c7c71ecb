"""What every training loop shares: batches with a length, train mode with frozen parts, the learning-rate schedule,
the time budget, one optimisation step and the running mean of the loss parts.

The loops themselves stay plain functions in the shape of torchvision's ``references/detection/engine.py``: each
model's ``train_one_epoch(model, optimizer, batches, epoch)`` takes an iterable of ready batches built by that
model's data function and runs one optimisation step per batch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from tqdm import tqdm

from leukolens.train.distributed import any_rank, is_main_process, unwrap

Batch = TypeVar("Batch")


@dataclass
class Batches(Generic[Batch]):
    """An epoch of batches made on demand (augmented as they are drawn), with a length for progress bars."""

    count: int
    make: Callable[[], Iterator[Batch]]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Batch]:
        return self.make()


def progress(description: str) -> Callable[[Iterable], Iterable]:
    """A quiet tqdm bar on stderr (off when stderr is not a terminal, and on all but the first of several training
    processes)."""
    disable = None if is_main_process() else True
    return lambda iterable: tqdm(iterable, desc=description, leave=False, disable=disable, file=sys.stderr)


def freeze(model: torch.nn.Module, modules: list[torch.nn.Module], *, weights: bool = True) -> None:
    """Keep ``modules`` in eval mode through every :func:`train_mode` (batch-norm statistics fixed), and with
    ``weights`` their parameters too."""
    for module in modules:
        module.eval()
        if weights:
            for parameter in module.parameters():
                parameter.requires_grad = False
    model._frozen_modules = [*getattr(model, "_frozen_modules", []), *modules]


def train_mode(model: torch.nn.Module) -> None:
    """``model.train()``, with the modules :func:`freeze` fixed left in eval mode (``model`` may be wrapped in
    DistributedDataParallel)."""
    model.train()
    for module in getattr(unwrap(model), "_frozen_modules", []):
        module.eval()


def warmup_cosine(
    total_steps: int, *, floor: float = 0.0, max_warmup: int = 100
) -> tuple[Callable[[int], float], list[int]]:
    """A learning-rate factor: linear warm-up over ``min(max_warmup, total_steps // 10)`` steps, then cosine decay
    from 1 to ``floor`` at the horizon. Returns the factor and the horizon ``[steps]``, which a time budget shortens
    so that the decay still ends."""
    warmup = min(max_warmup, total_steps // 10)
    horizon = [total_steps]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, horizon[0] - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor, horizon


def last_epoch_within_budget(epochs: int, max_minutes: float, history: list[dict], epoch: int) -> int:
    """The last epoch (1-based) that a budget of ``max_minutes`` leaves room for, at the pace of the epochs so far
    (``history[-1]["minutes"]`` since the start); ``epochs`` when there is no budget."""
    if not max_minutes or not history:
        return epochs
    per_epoch = history[-1]["minutes"] / len(history)
    room = int((max_minutes - history[-1]["minutes"]) / per_epoch) if per_epoch > 0 else epochs
    return max(epoch + 1, min(epochs, epoch + 1 + room))


def optimisation_step(optimizer, scheduler, loss: torch.Tensor, *, parameters=None, max_norm: float = 0.0) -> None:
    """Backward, optional gradient clipping of ``parameters`` to ``max_norm``, one optimiser and schedule step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimizer.step()
    scheduler.step()


class MeanLosses:
    """The running mean of named loss parts over the steps of an epoch, shown on the progress bar."""

    def __init__(self, batches: Iterable, names: tuple[str, ...] | None = None):
        self.bar, self.names, self.totals, self.steps = batches, names, {}, 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        for name in self.names or parts:
            self.totals[name] = self.totals.get(name, 0.0) + parts[name].item()
        if hasattr(self.bar, "set_postfix"):
            self.bar.set_postfix(loss=f"{self.totals['total'] / self.steps:.3f}")

    def means(self) -> dict[str, float]:
        return {name: value / max(1, self.steps) for name, value in self.totals.items()}


def past(deadline: float | None) -> bool:
    """Whether ``deadline`` has passed; under several training processes, whether it has on any of them, so that
    every process stops at the same step."""
    return deadline is not None and any_rank(time.time() > deadline)
