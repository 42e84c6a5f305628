"""Release gates: every deployed format against the PyTorch original on labelled eval images.

The accuracy budget is in top-1 points: with class folders named like the model's labels the drop
is PyTorch's top-1 minus the format's; without labels (an ImageNet model on arbitrary photos) it is
the share of images whose top-1 differs from PyTorch's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from edgeport.runtime.classifier import Classifier
from torch import nn

from .evalset import EvalSet, load_eval_set
from .timing import time_interleaved

__all__ = ["EvalSet", "load_eval_set", "evaluate_formats", "apply_gates"]


def _latency_p50(clfs: dict[str, Classifier], sample: np.ndarray, runs: int) -> dict[str, float]:
    """Batch-1 p50 per format, formats interleaved in settled blocks (``timing``) so drift hits all alike."""
    samples = time_interleaved({name: (lambda c=clf: c.logits_from_tensor(sample)) for name, clf in clfs.items()}, runs=runs)
    return {name: round(samples.p50_ms(name), 3) for name in clfs}


@torch.no_grad()
def evaluate_formats(model: nn.Module, bundle: Path, formats: Sequence[str], data: EvalSet, runs: int = 30) -> dict[str, Any]:
    """Top-1, Δ vs PyTorch (points), agreement with PyTorch and latency p50 for each format."""
    model = model.eval().cpu()
    ref = torch.cat([model(torch.from_numpy(data.tensors[i : i + 16])) for i in range(0, len(data.tensors), 16)]).numpy()
    ref_top1 = ref.argmax(1)
    labelled = data.targets is not None
    torch_acc = float((ref_top1 == data.targets).mean()) if labelled else None
    clfs = {name: Classifier(bundle, format=name) for name in formats}
    latency = _latency_p50(clfs, data.tensors[:1], runs)
    result: dict[str, Any] = {"images": len(data.paths), "labelled": labelled, "skipped": data.skipped,
                              "torch": {"top1": torch_acc}, "formats": {}}
    for name, clf in clfs.items():
        top1 = clf.logits_from_tensor(data.tensors).argmax(1)
        agreement = float((top1 == ref_top1).mean())
        acc = float((top1 == data.targets).mean()) if labelled else None
        drop = (torch_acc - acc) * 100 if labelled else (1 - agreement) * 100
        result["formats"][name] = {"top1": acc, "drop_vs_torch_pp": round(drop, 4), "agreement_vs_torch": agreement,
                                   "latency_ms_p50": latency[name]}
    return result


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
