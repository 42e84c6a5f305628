"""What the explain tools look at: a model (loaded by ``trainer.loading``, the one model-spec parser), its
blocks, and an image as the network saw it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import LayerNameError
from edgeport.runtime.preprocess import load_image
from PIL import Image
from torch import nn
from torchvision import transforms as T

from ..loading import LoadedModel, as_loaded_model, load_model
from ..models import head_module_name
from ..strategies import STAGE_CONTAINERS
from ..transforms import eval_transform

__all__ = ["LoadedModel", "load_model", "as_loaded_model", "block_name", "block_names", "resolve_block", "SeenImage",
           "see_image"]

#: Depth words for ``--layer``: fractions of the way through the body's blocks.
DEPTHS = {"early": 0.15, "middle": 0.5, "late": 1.0}


def block_name(param_name: str) -> str:
    """The top-level block a parameter belongs to: its first name component, or the first two under
    a stage container (``strategies.STAGE_CONTAINERS``, the trainer's own notion of blocks:
    torchvision's ``features``, timm's ``blocks``, lukemelas' ``_blocks``).

    ``features.3.conv.0.weight`` → ``features.3``; ``blocks.3.1.conv_dw.weight`` → ``blocks.3``;
    ``layer2.0.conv1.weight`` → ``layer2``; ``classifier.1.bias`` → ``classifier``; ``fc.weight`` → ``fc``.
    """
    parts = param_name.split(".")
    return ".".join(parts[:2]) if parts[0] in STAGE_CONTAINERS and len(parts) > 2 else parts[0]


def block_names(model: nn.Module, include_head: bool = True) -> list[str]:
    """The model's top-level blocks in forward order (the order their parameters are registered)."""
    names = list(dict.fromkeys(block_name(n) for n, _ in model.named_parameters()))
    if not include_head:
        head = block_name(head_module_name(model) + ".weight")
        names = [n for n in names if n != head]
    return names


def resolve_block(model: nn.Module, layer: str | None, valid: list[str] | None = None) -> str:
    """A module name for ``layer``: a name in ``valid`` (default: any module of the model), a depth
    word (early / middle / late, picked among the body's blocks), or None for the last body block."""
    body = block_names(model, include_head=False)
    if layer is None:
        return body[-1]
    if layer in DEPTHS:
        return body[round(DEPTHS[layer] * (len(body) - 1))]
    names = valid if valid is not None else [n for n, _ in model.named_modules() if n]
    if layer not in names:
        raise LayerNameError(
            f"layer {layer!r} is not in this model; pass one of the blocks {body}, a depth word "
            f"({', '.join(DEPTHS)}), or any of its {len(names)} module names (e.g. {names[:3]}…)"
        )
    return layer


@dataclass
class SeenImage:
    """One image as the network sees it: the normalised input tensor and the centre crop it came from."""

    source: str
    tensor: torch.Tensor  # 1×3×H×W, normalised
    crop: Image.Image  # the RGB pixels under the tensor, for overlays


def see_image(path: str | Path, contract: PreprocessContract) -> SeenImage:
    """Decode with the runtime's loader and apply the contract's eval transform (the single source of truth);
    the crop shown under overlays is that same transform's geometry, without ToTensor/Normalize."""
    rgb = load_image(path)
    full = eval_transform(contract)
    geometry = T.Compose([t for t in full.transforms if not isinstance(t, (T.ToTensor, T.Normalize))])
    return SeenImage(str(path), full(rgb).unsqueeze(0), geometry(rgb))
