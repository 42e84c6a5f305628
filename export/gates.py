"""Release gates: every deployed format against the PyTorch original on labelled eval images.

The accuracy budget is in top-1 points: with class folders named like the model's labels the drop
is PyTorch's top-1 minus the format's; without labels (an ImageNet model on arbitrary photos) it is
the share of images whose top-1 differs from PyTorch's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import DataError
from edgeport.runtime.inputs import iter_image_files
from edgeport.runtime.preprocess import preprocess_files
from torch import nn

__all__ = ["EvalSet", "load_eval_set", "evaluate_formats", "apply_gates"]


@dataclass(frozen=True)
class EvalSet:
    paths: list[Path]
    tensors: np.ndarray  # (N, 3, H, W), the runtime's preprocessing
    targets: np.ndarray | None  # label indices, or None when the folder has no class sub-folders
    skipped: list[str]


def load_eval_set(folder: Path, contract: PreprocessContract) -> EvalSet:
    """Images under ``folder``; labelled when its sub-folders are named like the model's labels."""
    folder = Path(folder)
    files = iter_image_files(folder)
    if not files:
        raise DataError(f"--eval {folder} holds no images")
    subdirs = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    index = {label: i for i, label in enumerate(contract.labels)}
    labelled = bool(subdirs) and all(d in index for d in subdirs)
    if subdirs and not labelled and any(d in index for d in subdirs):
        unknown = [d for d in subdirs if d not in index]
        raise DataError(f"--eval {folder} has class folders {unknown} that are not labels of the model; rename or remove them")
    tensors, kept, skipped = preprocess_files(files, contract)
    if not kept:
        raise DataError(f"--eval {folder}: no image could be decoded")
    targets = np.asarray([index[p.relative_to(folder).parts[0]] for p in kept]) if labelled else None
    return EvalSet(kept, tensors, targets, skipped)


def _latency_p50(clfs: dict[str, Classifier], sample: np.ndarray, runs: int) -> dict[str, float]:
    """Batch-1 p50 per format, formats interleaved (A B C A B C …) so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in clfs}
    for clf in clfs.values():
        for _ in range(3):
            clf.logits_from_tensor(sample)
    for _ in range(runs):
        for name, clf in clfs.items():
            start = time.perf_counter()
            clf.logits_from_tensor(sample)
            times[name].append(time.perf_counter() - start)
    return {name: round(float(np.median(t)) * 1e3, 3) for name, t in times.items()}


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
