"""The weights a run evaluates and saves: an exponential moving average of the trained ones (recipe ``ema_horizon``).

Why: on a few hundred photos the unfrozen phase's last steps are noisy, so the epoch a run ends on can sit two to four
photos below the one before it; users deploy what training ends with as often as ``best.pt``. An average over the
last part of an epoch smooths that walk out. torch's own ``AveragedModel`` keeps the copy (buffers averaged too, as
timm's ``ModelEmaV3``); the average starts as a plain running mean, so the first steps, the probe-fitted head's
among them, are not drowned by the starting weights, and turns into an EMA with a horizon of ``horizon`` epochs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["make_average", "ema_decay"]


def ema_decay(horizon_epochs: float, steps_per_epoch: int) -> float:
    """Per-step decay whose horizon (1 / (1 - decay) steps) is ``horizon_epochs`` of an epoch, at least one step."""
    return 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)


def make_average(model: nn.Module, horizon_epochs: float, steps_per_epoch: int) -> AveragedModel:
    """A copy of ``model`` that ``update_parameters(model)`` after each optimizer step moves toward it."""
    decay = ema_decay(horizon_epochs, steps_per_epoch)

    def blend(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        weight = max(1.0 - decay, 1.0 / (int(num_averaged) + 1))  # a running mean until it reaches the EMA's weight
        return averaged + (current - averaged) * weight

    return AveragedModel(model, avg_fn=blend, use_buffers=True)
