"""Grad-CAM (Selvaraju et al. 2017): where the evidence for one class lies, from hooks on one conv block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from edgeport.runtime.errors import LayerNameError, UsageError
from PIL import Image

from .model import LoadedModel, as_loaded_model, resolve_block, see_image
from .render import overlay_heatmap, save_image

__all__ = ["GradCam", "grad_cam", "save_grad_cam"]


@dataclass
class GradCam:
    source: str
    layer: str
    class_index: int
    label: str
    score: float  # softmax probability of ``label``
    predicted: str  # the top-1 label (differs from ``label`` when a class was named)
    predicted_score: float
    heat: np.ndarray  # H×W, ≥ 0, the size of ``crop``
    crop: Image.Image

    def overlay(self) -> Image.Image:
        return overlay_heatmap(self.crop, self.heat)


def _class_index(source: LoadedModel, target: str | int | None, logits: torch.Tensor) -> int:
    if target is None:
        return int(logits.argmax())
    labels = list(source.contract.labels)
    if isinstance(target, str) and target in labels:
        return labels.index(target)
    if isinstance(target, int) and 0 <= target < len(labels):
        return target
    raise UsageError(f"class {target!r} is not one of the model's {len(labels)} labels (e.g. {labels[:5]}); "
                     "pass a label exactly as the model names it")


def grad_cam(source: LoadedModel | str, image: str | Path, layer: str | None = None, target: str | int | None = None) -> GradCam:
    """ReLU of the channel maps of ``layer`` (default: the last conv block) weighted by their mean gradient
    of the ``target`` logit (default: the top class), upsampled to the crop the network saw."""
    source = as_loaded_model(source)
    model = source.model.eval()
    name = resolve_block(model, layer)
    seen = see_image(image, source.contract)
    captured: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output: torch.Tensor) -> None:
        captured["maps"] = output
        output.register_hook(lambda grad: captured.__setitem__("grads", grad))

    handle = model.get_submodule(name).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(seen.tensor)[0]
            index = _class_index(source, target, logits)
            model.zero_grad(set_to_none=True)
            logits[index].backward()
    finally:
        handle.remove()
    if "grads" not in captured or captured["maps"].dim() != 4:
        raise LayerNameError(f"layer {name!r} gives no spatial maps with a gradient; pick a conv block")
    maps, grads = captured["maps"].detach(), captured["grads"].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(seen.crop.height, seen.crop.width), mode="bilinear", align_corners=False)
    probs = logits.detach().softmax(0)
    top = int(probs.argmax())
    labels = source.contract.labels
    return GradCam(seen.source, name, index, labels[index], float(probs[index]), labels[top], float(probs[top]),
                   cam[0, 0].clamp_min(0).numpy(), seen.crop)


def save_grad_cam(source: LoadedModel | str, image: str | Path, out: str | Path, layer: str | None = None,
                  target: str | int | None = None) -> GradCam:
    cam = grad_cam(source, image, layer, target)
    save_image(cam.overlay(), out)
    return cam
