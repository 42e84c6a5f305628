"""fastai's LR range test: raise the LR exponentially batch by batch, watch the loss, suggest an LR.

The sweep trains the model for real, so its weights (and the RNG) are restored afterwards: a
``--lr auto`` run trains from exactly the weights it would have started from without the sweep.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from edgeport.runtime.atomic import atomic_write_bytes
from edgeport.runtime.errors import UsageError
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .devices import Precision, choose_precision
from .steps import train_step

__all__ = ["LRFindResult", "lr_find", "lr_find_on_features", "lr_advice", "suggest_valley", "suggest_steep",
           "plot_lr_find", "FAR_FACTOR"]

#: An --lr this many times above or below the finder's valley gets a warning at the start of the run.
FAR_FACTOR = 10.0


@dataclass
class LRFindResult:
    """The sweep (LR and smoothed loss per batch) and fastai's two suggestions."""

    lrs: list[float]
    losses: list[float]
    valley: float
    steep: float

    def to_dict(self) -> dict:
        return {"valley": self.valley, "steep": self.steep, "lrs": self.lrs, "losses": self.losses}


def suggest_valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's ``valley``: the LR two-thirds down the longest falling stretch of the loss curve."""
    n = len(losses)
    lds = [1] * n  # length of the longest decreasing subsequence ending at i
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return lrs[max_start + int(sections) + int(sections / 2)]


def suggest_steep(lrs: list[float], losses: list[float]) -> float:
    """The LR where the loss falls fastest per decade of LR."""
    grads = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)]
    return lrs[min(range(len(grads)), key=grads.__getitem__)]


def _endless(loader: DataLoader, n: int):
    """``n`` batches, going round the loader again on small data sets (fresh augmentations each time)."""
    while True:
        for batch in loader:
            if n == 0:
                return
            n -= 1
            yield batch


def lr_find(model: nn.Module, loader: DataLoader, device: torch.device, *, start_lr: float = 1e-7,
            end_lr: float = 10.0, num_it: int = 100, diverge: float = 4.0, progress: bool = True,
            precision: Precision | None = None) -> LRFindResult:
    """Sweep the trainable parameters' LR from ``start_lr`` to ``end_lr`` over ``num_it`` batches.

    Stops early once the smoothed loss exceeds ``diverge`` × its minimum (fastai's rule).
    """
    if num_it < 5:
        raise UsageError(f"the LR finder needs at least 5 iterations, got {num_it}")
    saved_weights = copy.deepcopy(model.state_dict())
    saved_rng = torch.get_rng_state()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=start_lr, weight_decay=0.01)
    precision = precision or choose_precision(device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.grad_scaler)
    lrs, losses = [], []
    smooth, best, beta = 0.0, math.inf, 0.98
    model.train()
    try:
        for i, (x, y) in enumerate(tqdm(_endless(loader, num_it), total=num_it, desc="lr_find", leave=False, disable=not progress)):
            lr = start_lr * (end_lr / start_lr) ** (i / (num_it - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(model, x, y, optimizer, scaler, device, precision=precision)
            smooth = beta * smooth + (1 - beta) * loss
            smoothed = smooth / (1 - beta ** (i + 1))  # bias-corrected running mean
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
    finally:
        model.load_state_dict(saved_weights)
        torch.set_rng_state(saved_rng)
    # Like fastai: skip the first tenth (warm-up of the running mean) and the exploding tail.
    keep_lrs, keep_losses = lrs[num_it // 10:-5], losses[num_it // 10:-5]
    if len(keep_lrs) < 3:
        raise UsageError(f"the loss diverged after {len(lrs)} of {num_it} LR-finder batches; lower --lr-find-end")
    return LRFindResult(lrs, losses, suggest_valley(keep_lrs, keep_losses), suggest_steep(keep_lrs, keep_losses))


def lr_find_on_features(x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int, seed: int,
                        num_it: int = 100) -> LRFindResult:
    """The same sweep for a fresh head on the frozen body's features (the linear probe's): milliseconds instead of
    ``num_it`` forward passes of the body, so every run can compare ``--lr`` with it. Augmentation aside, it is the
    frozen phase's loss landscape: the body is fixed there and BatchNorm in eval mode."""
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG: training must not see it
        head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():  # torchvision's classifier init (MobileNet, EfficientNet): small, so the sweep starts flat
        head.weight.normal_(0, 0.01, generator=generator)
        head.bias.zero_()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)
    return lr_find(head, loader, torch.device("cpu"), num_it=num_it, progress=False)


def lr_advice(lr: float, found: dict) -> str | None:
    """One line when ``lr`` is ``FAR_FACTOR``× or more away from the finder's valley (``found``: its ``valley`` and
    ``steep``, as a run's metrics keep them), else None. Never overrides."""
    valley, steep = found["valley"], found["steep"]
    ratio = lr / valley
    if 1 / FAR_FACTOR < ratio < FAR_FACTOR:
        return None
    side = f"{ratio:.0f}× above" if ratio >= 1 else f"{1 / ratio:.0f}× below"
    return (f"warning: --lr {lr:g} is {side} the LR finder's suggestion for the head, {valley:.1e} (valley; steep "
            f"{steep:.1e}), measured on the training images' features; training goes on with --lr {lr:g} "
            f"(--lr auto would use the suggestion, --lr-find plots the sweep)")


def plot_lr_find(result: LRFindResult, path: Path) -> None:
    """Loss vs LR on a log axis, both suggestions marked (fastai's ``plot_lr_find``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    for name, lr, colour in (("valley", result.valley, "red"), ("steep", result.steep, "orange")):
        loss = result.losses[result.lrs.index(lr)]
        ax.plot([lr], [loss], "o", color=colour, label=f"{name} {lr:.2e}")
    ax.set(xlabel="learning rate", ylabel="smoothed loss", title="LR finder")
    top = min(max(result.losses), 4 * min(result.losses))
    ax.set_ylim(min(result.losses) * 0.9, top * 1.05)
    ax.legend()
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
