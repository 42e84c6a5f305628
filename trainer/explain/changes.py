"""What fine-tuning changed: per top-level block, the relative weight change from the pretrained weights.

Small bars for the early blocks mean the pretrained features were reused as they were; large ones mean
the data needed different features (then unfreezing more layers, or more of them earlier, pays off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..loading import LoadedModel, as_loaded_model, load_model, torchvision_spec
from .model import block_name
from .render import new_figure, save_figure

__all__ = ["BlockChange", "weight_changes", "save_weight_changes"]


@dataclass(frozen=True)
class BlockChange:
    block: str
    relative_change: float | None  # ‖W − W₀‖ / ‖W₀‖ over the block's comparable parameters; None: all new
    compared: int  # parameter tensors with the same name and shape in both models
    new: int  # parameter tensors the reference lacks (e.g. a replaced classifier head)


def weight_changes(finetuned: LoadedModel | str, reference: LoadedModel | str | None = None) -> list[BlockChange]:
    """Learnable parameters only (BatchNorm running statistics are buffers and are not counted), grouped by
    :func:`~edgeport.trainer.explain.model.block_name`. ``reference`` defaults to the ImageNet weights of the
    same architecture, the starting point of every edge-train run."""
    finetuned = as_loaded_model(finetuned)
    reference = as_loaded_model(reference) if reference is not None else None
    reference = reference or load_model(torchvision_spec(finetuned.arch))
    before = dict(reference.model.named_parameters())
    sums: dict[str, list[float]] = {}  # block → [Σ‖Δ‖², Σ‖W₀‖², compared, new]
    with torch.no_grad():
        for name, after in finetuned.model.named_parameters():
            acc = sums.setdefault(block_name(name), [0.0, 0.0, 0, 0])
            old = before.get(name)
            if old is None or old.shape != after.shape:
                acc[3] += 1
                continue
            acc[0] += float((after.double() - old.double()).pow(2).sum())
            acc[1] += float(old.double().pow(2).sum())
            acc[2] += 1
    return [BlockChange(block, math.sqrt(d2 / w2) if compared and w2 > 0 else None, int(compared), int(new))
            for block, (d2, w2, compared, new) in sums.items()]


def save_weight_changes(finetuned: LoadedModel | str, out: str | Path, reference: LoadedModel | str | None = None) -> list[BlockChange]:
    finetuned = as_loaded_model(finetuned)
    reference = as_loaded_model(reference) if reference is not None else None
    changes = weight_changes(finetuned, reference)
    ref_name = reference.name if reference else f"ImageNet {finetuned.arch}"
    fig = new_figure(max(5.0, 0.32 * len(changes) + 1.5), 3.4)
    ax = fig.add_subplot()
    xs = range(len(changes))
    ax.bar(xs, [c.relative_change or 0.0 for c in changes], color="tab:blue")
    for x, change in zip(xs, changes):
        if change.relative_change is None:  # a replaced head has no "before" to compare with
            ax.text(x, 0, "new", rotation=90, ha="center", va="bottom", fontsize=7, color="tab:red")
    ax.set_xticks(list(xs), [c.block.replace("features.", "f.") for c in changes], rotation=90, fontsize=7)
    ax.set_ylabel("‖W − W₀‖ / ‖W₀‖", fontsize=8)
    ax.set_title(f"weight change per block: {Path(finetuned.name).parent.name or finetuned.name} vs {ref_name}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, out)
    return changes
