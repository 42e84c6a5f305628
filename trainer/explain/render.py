"""Pixels out: matplotlib figures (Agg, no display needed) and heat-map overlays, written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from edgeport.runtime.atomic import atomic_write_bytes
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["new_figure", "save_figure", "save_image", "overlay_heatmap"]

matplotlib.use("Agg")  # files only: works on headless boxes and CI


def new_figure(width_in: float, height_in: float) -> Figure:
    """A Figure bound to the Agg canvas (no pyplot state, so nothing leaks between calls)."""
    return Figure(figsize=(width_in, height_in), layout="constrained")


def save_figure(fig: Figure, path: str | Path, dpi: int = 80) -> Path:
    """As a 256-colour PNG: activation grids are noisy and would otherwise be several times larger."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as img:
        return save_image(img.convert("RGB").quantize(256), path)


def save_image(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_bytes(path, lambda fh: image.save(fh, format="PNG", optimize=True))
    return path


def overlay_heatmap(crop: Image.Image, heat: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> Image.Image:
    """``heat`` (H×W, any non-negative scale, same size as ``crop``) coloured and blended over the crop."""
    peak = float(heat.max())
    norm = heat / peak if peak > 0 else np.zeros_like(heat)
    colours = (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.uint8)
    return Image.blend(crop.convert("RGB"), Image.fromarray(colours), alpha)
