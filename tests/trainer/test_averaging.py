"""The weight average a run evaluates and saves (recipe ``ema_horizon``, trainer/averaging.py)."""

from __future__ import annotations

import pytest
import torch
from edgeport.trainer.averaging import ema_decay, make_average
from torch import nn


def test_decay_spans_the_horizon_in_steps():
    assert ema_decay(0.5, 20) == pytest.approx(0.9)  # 10 steps
    assert ema_decay(1.0, 1) == 0.0 and ema_decay(0.25, 2) == 0.0  # under a step: the latest weights


def test_average_is_a_running_mean_then_an_ema_and_averages_buffers():
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    average = make_average(model, horizon_epochs=0.5, steps_per_epoch=8)  # EMA weight 1/4 per step
    expected, weights = None, []
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 9.0], start=1):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(value)
        average.update_parameters(model)
        weights.append(value)
        if step == 1:
            expected = value  # the first update copies
        else:
            expected += (value - expected) * max(0.25, 1.0 / step)
        assert average.module[0].weight.flatten().tolist() == pytest.approx([expected, expected])
        assert average.module[1].running_mean.item() == pytest.approx(expected)
    assert sum(weights[:4]) / 4 == pytest.approx(2.5)  # steps 1-4 were the plain mean …
    assert expected == pytest.approx(((2.5 + (5 - 2.5) * 0.25) * 0.75) + 9 * 0.25)  # … then 1/4 per step
    assert model[0].weight.flatten().tolist() == [9.0, 9.0]  # the trained model itself is untouched
