"""Activation maps: which channels of a layer fire most on one image, shown next to the input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from edgeport.runtime.errors import LayerNameError
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from .model import LoadedModel, as_loaded_model, block_names, resolve_block, see_image
from .render import new_figure, save_figure

__all__ = ["Activations", "layer_names", "activations", "save_activations"]


@dataclass
class Activations:
    layer: str
    channels: list[int]  # the strongest channels, strongest first
    maps: np.ndarray  # len(channels)×h×w, the raw activations of those channels
    crop: object  # PIL image: the input as the network saw it


def layer_names(model: nn.Module) -> list[str]:
    """Names ``create_feature_extractor`` accepts: the top-level blocks and every traced eval node."""
    _, eval_nodes = get_graph_node_names(model)
    return list(dict.fromkeys([*block_names(model), *eval_nodes]))


def activations(source: LoadedModel | str, image: str | Path, layer: str | None = "middle", top: int = 16) -> Activations:
    """The ``top`` channels of ``layer`` with the largest mean activation on ``image``."""
    source = as_loaded_model(source)
    name = resolve_block(source.model, layer, valid=layer_names(source.model))
    seen = see_image(image, source.contract)
    extractor = create_feature_extractor(source.model, return_nodes={name: "out"}).eval()
    with torch.no_grad():
        out = extractor(seen.tensor)["out"][0]
    if out.dim() != 3:
        raise LayerNameError(f"layer {name!r} outputs shape {tuple(out.shape)}, not channel maps; pick a conv block")
    strongest = out.mean(dim=(1, 2)).argsort(descending=True)[:top].tolist()
    return Activations(name, strongest, out[strongest].numpy(), seen.crop)


def save_activations(source: LoadedModel | str, image: str | Path, out: str | Path, layer: str | None = "middle",
                     top: int = 16) -> Path:
    source = as_loaded_model(source)
    acts = activations(source, image, layer, top)
    cols = int(np.ceil(np.sqrt(len(acts.channels))))
    rows = int(np.ceil(len(acts.channels) / cols))
    fig = new_figure(2.6 + 1.3 * cols, max(2.8, 1.3 * rows + 0.4))
    left, right = fig.subfigures(1, 2, width_ratios=[2.6, 1.3 * cols])
    ax = left.add_subplot()
    ax.imshow(acts.crop)
    ax.set_title(Path(image).name, fontsize=8)
    ax.axis("off")
    right.suptitle(f"{source.arch} · {acts.layer}: {len(acts.channels)} strongest channels", fontsize=9)
    for i, (channel, amap) in enumerate(zip(acts.channels, acts.maps)):
        cell = right.add_subplot(rows, cols, i + 1)
        cell.imshow(amap, cmap="viridis")
        cell.set_title(f"ch {channel}", fontsize=7)
        cell.axis("off")
    return save_figure(fig, out)
