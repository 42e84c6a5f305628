"""edgeport's PyTorch stage: data, models, transfer learning (imports torch lazily)."""

from __future__ import annotations

__all__ = ["TrainConfig", "TrainResult", "fit"]


def __getattr__(name: str):
    if name in __all__:  # keep `edge-train --help` instant: torch loads on first real use
        from . import fit as _fit

        return getattr(_fit, name)
    raise AttributeError(name)
