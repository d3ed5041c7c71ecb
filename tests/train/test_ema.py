"""The EMA teacher: a warmed-up moving average of the weights, integer buffers copied."""

import pytest
import torch
from torch import nn

from leukolens.train.ema import ModelEMA


def test_the_teacher_follows_the_model_with_a_warmed_up_decay():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = ModelEMA(model, momentum=0.999)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    model[1].num_batches_tracked += 5
    ema.update(model)
    decay = 2 / 11  # (1 + 1) / (10 + 1), below the momentum
    assert ema.module[0].weight[0, 0].item() == pytest.approx(decay * 1 + (1 - decay) * 3)
    assert ema.module[1].num_batches_tracked.item() == 5
    ema.updates = 10_000
    assert ema.decay() == 0.999
