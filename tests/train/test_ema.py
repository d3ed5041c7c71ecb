"""The EMA teacher (a warmed-up moving average of the weights, integer buffers copied) and the uniform weight
average over the end of a run."""

import pytest
import torch
from torch import nn

from leukolens.train.ema import ModelEMA, WeightAverage


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


def test_the_weight_average_is_the_model_until_its_start_then_the_mean_of_the_steps_since():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    average = WeightAverage(model, start=3)
    seen = []
    for step, value in enumerate((1.0, 2.0, 4.0, 6.0, 11.0), start=1):
        with torch.no_grad():
            model[0].weight.fill_(value)
        model[1].num_batches_tracked.fill_(step)
        average.update(model)
        seen.append(average.module[0].weight.item())
    # steps 1-2 copy the model; from step 3 on, the mean of the weights of steps 3, 4, 5
    assert seen == pytest.approx([1.0, 2.0, 4.0, 5.0, 7.0])
    assert average.averaged == 3
    assert average.module[1].num_batches_tracked.item() == 5
    assert not any(p.requires_grad for p in average.module.parameters())

    resumed = WeightAverage(model, start=99)
    resumed.restore(average.state())
    assert (resumed.start, resumed.steps, resumed.averaged) == (3, 5, 3)
    assert resumed.module[0].weight.item() == pytest.approx(7.0)
