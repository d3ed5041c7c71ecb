"""Running averages of a model's weights: the exponential moving average that is pseudo-labelling's slowly updated
teacher, and the uniform average over the end of a run (weight averaging)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def _frozen_copy(model: nn.Module) -> nn.Module:
    copied = copy.deepcopy(model).eval()
    for parameter in copied.parameters():
        parameter.requires_grad = False
    return copied


@torch.no_grad()
def _blend(average: nn.Module, model: nn.Module, weight: float) -> None:
    """Move every floating-point weight and buffer of ``average`` ``weight`` of the way to ``model``'s (1: a copy);
    integer buffers are copied."""
    current = model.state_dict()
    for name, value in average.state_dict().items():
        if value.dtype.is_floating_point:
            value.lerp_(current[name].detach(), weight)
        else:
            value.copy_(current[name])


class ModelEMA:
    """A frozen copy of ``model`` whose weights follow the model's slowly.

    After each optimiser step, ``update`` sets every floating-point weight and buffer (BatchNorm statistics
    included) to ``decay * ema + (1 - decay) * model``, with ``decay = min(momentum, (1 + updates) / (10 +
    updates))``: the warm-up lets the copy follow quickly while the model changes fast at the start, so a short CPU
    run (a few hundred steps) still gets a useful teacher with a final momentum of 0.999 (whose own time constant is
    1,000 steps). Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, *, momentum: float = 0.999):
        self.module = _frozen_copy(model)
        self.momentum = momentum
        self.updates = 0

    def decay(self) -> float:
        return min(self.momentum, (1 + self.updates) / (10 + self.updates))

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        _blend(self.module, model, 1 - self.decay())


class WeightAverage:
    """The uniform average of a model's weights over the steps from ``start`` on (stochastic weight averaging
    along the end of the schedule, as SWAD does for domain generalisation: Cha et al. 2021).

    A single run's end point depends on its last few batches; the average of the points along the end of the
    schedule sits in a flatter region of the loss, which is what carries over to a microscope never seen. Before
    ``start`` the average is just the model (so a validation pass of :attr:`module` is always meaningful).
    Floating-point weights and buffers are averaged (batch-norm statistics included: frozen ones stay as they
    are); integer buffers are copied.
    """

    def __init__(self, model: nn.Module, *, start: int):
        self.module = _frozen_copy(model)
        self.start = start
        self.steps = 0  # optimiser steps seen
        self.averaged = 0  # how many of them are in the average

    def update(self, model: nn.Module) -> None:
        self.steps += 1
        if self.steps >= self.start:
            self.averaged += 1
        _blend(self.module, model, 1 / self.averaged if self.averaged else 1.0)

    def state(self) -> dict:
        return {"state_dict": self.module.state_dict(), "start": self.start, "steps": self.steps,
                "averaged": self.averaged}

    def restore(self, state: dict) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.start, self.steps, self.averaged = state["start"], state["steps"], state["averaged"]
