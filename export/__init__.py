"""edgeport's export stage: PyTorch → ONNX bundle with the contract, verified on real images."""

from __future__ import annotations

__all__ = ["export_bundle"]


def __getattr__(name: str):
    if name == "export_bundle":  # lazy: importing the package must not load torch
        from .pipeline import export_bundle

        return export_bundle
    raise AttributeError(name)
