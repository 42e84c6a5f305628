"""One optimisation step and one validation pass, shared by the training loop and the LR finder."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .devices import amp_dtype, use_amp, use_channels_last

__all__ = ["to_device", "train_step", "evaluate"]


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device.type == "cpu":
        return x, y
    fmt = torch.channels_last if use_channels_last(device) else torch.contiguous_format
    return x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, device: torch.device,
               batch_augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Forward, backward and update (under AMP on CUDA); returns the batch's mean loss.
    ``batch_augment`` is the on-device half of ``--aug`` (CUDA only), applied after the transfer."""
    x, y = to_device(x, y, device)
    if batch_augment is not None:
        x = batch_augment(x)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=amp_dtype(device), enabled=use_amp(device)):
        loss = nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, torch.Tensor]:
    """Per-image target, prediction, loss and softmax probabilities over the whole loader, in order.

    A target of -1 marks an image that failed to decode in the loader: its loss is 0 and the caller drops it.
    """
    model.eval()
    targets, logits = [], []
    for x, y in loader:
        x, y_dev = to_device(x, y, device)
        with torch.autocast(device.type, dtype=amp_dtype(device), enabled=use_amp(device)):
            logits.append(model(x).float().cpu())
        targets.append(y)
    out = torch.cat(logits)
    target = torch.cat(targets)
    return {
        "targets": target,
        "preds": out.argmax(1),
        "losses": nn.functional.cross_entropy(out, target, reduction="none", ignore_index=-1),
        "probs": out.softmax(1),
    }
