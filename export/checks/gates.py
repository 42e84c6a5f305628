"""Release gates: pass / fail per format on the figures ``evaluate`` measured, and the typed error that
fails the export.

The accuracy budget is in top-1 points: with class folders named like the model's labels the drop
is PyTorch's top-1 minus the format's; without labels (an ImageNet model on arbitrary photos) it is
the share of images whose top-1 differs from PyTorch's.
"""

from __future__ import annotations

from typing import Any

from edgeport.runtime.errors import AccuracyGateError, SpeedGateError

__all__ = ["apply_gates", "raise_on_failed_gates"]


def apply_gates(evaluation: dict[str, Any] | None, formats: dict[str, Any], verification: dict[str, Any],
                max_drop: float | None, require_speedup: bool) -> dict[str, dict[str, str]]:
    """pass / fail / skipped per format and gate. Speed compares each INT8 format with FP32 ONNX as
    measured at export (``verification[fmt]["latency_ratio_vs_fp32"]``)."""
    gates: dict[str, dict[str, str]] = {}
    for name, entry in formats.items():
        measured = evaluation["formats"].get(name) if evaluation else None
        accuracy = "skipped"
        if max_drop is not None and measured is not None:
            accuracy = "pass" if measured["drop_vs_torch_pp"] <= max_drop else "fail"
        speed = "skipped"
        if require_speedup and entry["precision"] == "int8":
            speed = "pass" if verification[name]["latency_ratio_vs_fp32"] < 1.0 else "fail"
        gates[name] = {"accuracy": accuracy, "speed": speed}
    return gates


def raise_on_failed_gates(manifest: dict[str, Any], max_drop: float | None) -> None:
    """AccuracyGateError, then SpeedGateError, naming every format that failed and by how much."""
    failed_acc = [n for n, g in manifest["gates"].items() if g["accuracy"] == "fail"]
    if failed_acc:
        drops = {n: manifest["evaluation"]["formats"][n]["drop_vs_torch_pp"] for n in failed_acc}
        raise AccuracyGateError(
            f"accuracy gate failed: {', '.join(f'{n} drops {d:.2f} points' for n, d in drops.items())} below PyTorch "
            f"(--max-drop {max_drop}); the bundle was not written. Try --calib-method percentile, more "
            "--calib-size, or ship the FP32 formats"
        )
    failed_speed = [n for n, g in manifest["gates"].items() if g["speed"] == "fail"]
    if failed_speed:
        ratios = {n: manifest["verification"][n]["latency_ratio_vs_fp32"] for n in failed_speed}
        raise SpeedGateError(
            f"speed gate failed: {', '.join(f'{n} runs at ×{r:.2f} of FP32' for n, r in ratios.items())} "
            "(--require-speedup); the bundle was not written. Build for the device's CPU with --target-cpu, or drop the INT8 format"
        )
