"""An exponential moving average of a model's weights: the slowly updated teacher of pseudo-labelling."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of ``model`` whose weights follow the model's slowly.

    After each optimiser step, ``update`` sets every floating-point weight and buffer (BatchNorm statistics
    included) to ``decay * ema + (1 - decay) * model``, with ``decay = min(momentum, (1 + updates) / (10 +
    updates))``: the warm-up lets the copy follow quickly while the model changes fast at the start, so a short CPU
    run (a few hundred steps) still gets a useful teacher with a final momentum of 0.999 (whose own time constant is
    1,000 steps). Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, *, momentum: float = 0.999):
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad = False
        self.momentum = momentum
        self.updates = 0

    def decay(self) -> float:
        return min(self.momentum, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        current = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[name].detach(), alpha=1 - d)
            else:
                value.copy_(current[name])
