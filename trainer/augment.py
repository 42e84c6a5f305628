"""Training augmentation presets by name (``--aug none|light|strong``).

Each preset has a geometric part that must run per image on the CPU (RandomResizedCrop needs the
decoded image) and a cheap pixel part (flip, colour jitter, normalize). On the CPU the pixel part
runs per item with torchvision v2 transforms. On CUDA the loader only crops and converts, and the
pixel part runs on the GPU per batch (``BatchAugment``), with an independent draw per sample, so
the CPU cores that feed the GPU only decode and crop.

The eval transform is not here: it is derived from the contract in ``transforms.eval_transform``.
"""

from __future__ import annotations

from typing import Callable

import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import UsageError
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from .choices import AUG_PRESETS, AugPreset, aug_names
from .transforms import eval_transform

__all__ = ["AugPreset", "AUG_PRESETS", "aug_names", "train_transforms", "BatchAugment"]


def _preset(name: str) -> AugPreset:
    if name not in AUG_PRESETS:
        raise UsageError(f"unknown augmentation preset {name!r}; choose one of {aug_names()}")
    return AUG_PRESETS[name]


def _geometry(preset: AugPreset, contract: PreprocessContract) -> list[nn.Module]:
    interp = InterpolationMode(contract.interpolation)
    ops: list[nn.Module] = []
    if preset.rotate_degrees:
        ops.append(v2.RandomRotation(preset.rotate_degrees, interpolation=interp))
    ops.append(v2.RandomResizedCrop(contract.input_size, scale=preset.crop_scale, interpolation=interp, antialias=True))
    return ops


def train_transforms(contract: PreprocessContract, aug: str = "light",
                     device: torch.device | str = "cpu") -> tuple[Callable, "BatchAugment | None"]:
    """(item transform for the loader, batch transform for the device or None) for preset ``aug``."""
    preset = _preset(aug)
    if preset.crop_scale is None:
        return eval_transform(contract), None
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if torch.device(device).type == "cuda":
        return v2.Compose([*_geometry(preset, contract), *to_float]), BatchAugment(preset, contract)
    pixel: list[nn.Module] = []
    if preset.flip_p:
        pixel.append(v2.RandomHorizontalFlip(preset.flip_p))
    if preset.brightness or preset.contrast or preset.saturation:
        pixel.append(v2.ColorJitter(brightness=preset.brightness or None, contrast=preset.contrast or None,
                                    saturation=preset.saturation or None))
    return v2.Compose([*_geometry(preset, contract), *to_float, *pixel, v2.Normalize(contract.mean, contract.std)]), None


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend`` with one factor per sample: ``factor·image + (1-factor)·other`` in [0, 1]."""
    return (factor * image + (1 - factor) * other).clamp_(0, 1)


class BatchAugment(nn.Module):
    """The pixel part of a preset on a float [0, 1] NCHW batch, one random draw per sample.

    torchvision's v2 transforms draw one set of parameters per call, i.e. per batch; here flip and
    each jitter factor are drawn per sample, from the same ranges as the CPU item path (which
    applies the jitter operations in a random order; here the order is fixed).
    """

    def __init__(self, preset: AugPreset, contract: PreprocessContract):
        super().__init__()
        self.preset = preset
        self.register_buffer("mean", torch.tensor(contract.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(contract.std).view(1, 3, 1, 1), persistent=False)

    def _factors(self, x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator)
        return 1 - strength + 2 * strength * u

    @torch.no_grad()
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.preset
        x = x.float()
        if p.flip_p:
            flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < p.flip_p
            x = torch.where(flip, x.flip(-1), x)
        if p.brightness:
            x = _blend(x, torch.zeros_like(x), self._factors(x, p.brightness, generator))
        if p.contrast:
            gray_mean = v2.functional.rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
            x = _blend(x, gray_mean, self._factors(x, p.contrast, generator))
        if p.saturation:
            x = _blend(x, v2.functional.rgb_to_grayscale(x), self._factors(x, p.saturation, generator))
        return (x - self.mean.to(x.device)) / self.std.to(x.device)
