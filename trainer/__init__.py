"""edgeport's PyTorch stage: data, models, transfer learning, the LR finder, and ``explain`` (what the
network learned). Names load lazily so that ``edge-train --help`` stays instant; torch loads on first use."""

from __future__ import annotations

from importlib import import_module

from edgeport.runtime.errors import DataError, EdgeportError, UsageError, WeightsNotFoundError

__all__ = ["TrainConfig", "TrainResult", "fit", "find_lr", "LoadedModel", "load_model", "EdgeportError", "UsageError",
           "DataError", "WeightsNotFoundError"]

# name → module that defines it. No submodule is named like a public name: a module ``fit`` holding
# the function ``fit`` shadowed it (a RecursionError once, then the module instead of the function).
_LAZY = {"TrainConfig": ".training", "TrainResult": ".training", "fit": ".training", "find_lr": ".training", "LoadedModel": ".loading",
         "load_model": ".loading"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
