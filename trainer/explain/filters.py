"""First-layer filters: the edge, colour-blob and texture detectors transfer learning reuses."""

from __future__ import annotations

from pathlib import Path

import torch
from edgeport.runtime.errors import UsageError
from torch import nn
from torchvision.utils import make_grid

from .model import LoadedModel, as_loaded_model
from .render import new_figure, save_figure

__all__ = ["first_conv", "filter_grid", "save_filters"]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution that reads the RGB image (``features.0.0``, ``conv1`` …)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    raise UsageError(f"{type(model).__name__} has no Conv2d on the 3-channel input; filters cannot be shown")


def filter_grid(model: nn.Module) -> torch.Tensor:
    """3×H×W image of every first-layer filter, each min-max normalised on its own (signs and scale
    differ per filter; a shared scale would leave most of them grey)."""
    _, conv = first_conv(model)
    weights = conv.weight.detach().float().cpu()
    nrow = int(round(weights.shape[0] ** 0.5))
    return make_grid(weights, nrow=nrow, normalize=True, scale_each=True, padding=1, pad_value=1.0)


def save_filters(source: LoadedModel | str, out: str | Path) -> Path:
    source = as_loaded_model(source)
    name, conv = first_conv(source.model)
    grid = filter_grid(source.model)
    fig = new_figure(4.2, 4.5)
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(f"{source.arch} · {name}: {conv.out_channels} filters {conv.kernel_size[0]}×{conv.kernel_size[1]}",
                 fontsize=9)
    ax.axis("off")
    return save_figure(fig, out)
