"""One optimisation step and one validation pass, shared by the training loop and the LR finder."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .devices import Precision, choose_precision

__all__ = ["to_device", "train_step", "evaluate", "tta_logits", "tta_accuracy"]


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device``; on CUDA in channels_last (a CPU model in channels_last converts its input itself)."""
    if device.type == "cpu":
        return x, y
    return x.to(device, non_blocking=True, memory_format=torch.channels_last), y.to(device, non_blocking=True)


def _autocast(device: torch.device, precision: Precision | None) -> torch.autocast:
    precision = precision or choose_precision(device)
    return torch.autocast(device.type, dtype=precision.autocast or torch.bfloat16, enabled=precision.autocast is not None)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, device: torch.device,
               batch_augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
               criterion: nn.Module | None = None, precision: Precision | None = None) -> float:
    """Forward, backward and update (under the run's ``precision``, default ``choose_precision``); returns the
    batch's mean loss.
    ``batch_augment`` is the on-device half of ``--aug`` (CUDA only), applied after the transfer;
    ``criterion`` (default: plain cross-entropy) carries the recipe's label smoothing and ``--balance weights``."""
    x, y = to_device(x, y, device)
    if batch_augment is not None:
        x = batch_augment(x)
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, precision):
        out = model(x)
        loss = nn.functional.cross_entropy(out, y) if criterion is None else criterion(out, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             precision: Precision | None = None) -> dict[str, torch.Tensor]:
    """Per-image target, prediction, loss and softmax probabilities over the whole loader, in order.

    A target of -1 marks an image that failed to decode in the loader: its loss is 0 and the caller drops it.
    """
    model.eval()
    targets, logits = [], []
    for x, y in loader:
        x, y_dev = to_device(x, y, device)
        with _autocast(device, precision):
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


def tta_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the mean softmax over the eval crop and its mirror image (log of it, as logits).

    fastai's ``Learner.tta`` averages random training augmentations; the eval crop plus a horizontal flip is
    the deterministic, cheap core of it (two forward passes). A run-time report only: it is never exported.
    """
    probs = model(x).float().softmax(1) + model(torch.flip(x, dims=[3])).float().softmax(1)
    return (probs / 2).log()


@torch.no_grad()
def tta_accuracy(model: nn.Module, loader: DataLoader, device: torch.device,
                 precision: Precision | None = None) -> tuple[int, int]:
    """(correct, counted) with ``tta_logits`` over the loader; images the loader failed to decode are not counted."""
    model.eval()
    correct = counted = 0
    for x, y in loader:
        x, _ = to_device(x, y, device)
        with _autocast(device, precision):
            preds = tta_logits(model, x).argmax(1).cpu()
        keep = y >= 0
        correct += int((preds[keep] == y[keep]).sum())
        counted += int(keep.sum())
    return correct, counted
