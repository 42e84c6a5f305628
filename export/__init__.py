"""edgeport's export stage: PyTorch → verified, gated bundle (ONNX, INT8, OpenVINO) with the contract,
and edge-bench. Subpackages: ``formats`` (one converter per format, the registry), ``checks`` (parity,
accuracy and latency, gates, eval sets), ``bench`` (edge-bench). Names load lazily: importing the
package does not import torch."""

from __future__ import annotations

from importlib import import_module

from edgeport.runtime.errors import (
    AccuracyGateError,
    CalibrationError,
    EdgeportError,
    GateError,
    SpeedGateError,
    UsageError,
    VerificationError,
)

__all__ = ["ExportOptions", "export_bundle", "BenchOptions", "run_benchmark", "EdgeportError", "UsageError",
           "CalibrationError", "VerificationError", "GateError", "AccuracyGateError", "SpeedGateError"]

_LAZY = {"ExportOptions": ".pipeline", "export_bundle": ".pipeline", "BenchOptions": ".bench.run", "run_benchmark": ".bench.run"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
