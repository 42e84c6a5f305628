"""What each deployed format costs and gains, measured at export on this CPU: every format against
the PyTorch original on the eval images (the release gate's figures), and a reduced-precision format
against FP32 ONNX on the verification images. Latency is timed interleaved in settled blocks
(``export.timing``) so that drift on a shared machine hits every format alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.preprocess import preprocess_files
from torch import nn

from ..timing import time_interleaved
from .accuracy import accuracy_against
from .evalset import EvalSet

__all__ = ["evaluate_formats", "compare_with_fp32"]


def _latency_p50(clfs: dict[str, Classifier], sample: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """Batch-1 p50 per runner, interleaved in settled blocks."""
    samples = time_interleaved({name: (lambda c=clf: c.logits_from_tensor(sample)) for name, clf in clfs.items()},
                               runs=runs, warmup=warmup)
    return {name: round(samples.p50_ms(name), 3) for name in clfs}


@torch.no_grad()
def evaluate_formats(model: nn.Module, bundle: Path, formats: Sequence[str], data: EvalSet, runs: int = 30) -> dict[str, Any]:
    """Per format: top-1, drop vs PyTorch (points), agreement with PyTorch, max |Δlogit| and latency p50."""
    model = model.eval().cpu()
    ref = torch.cat([model(torch.from_numpy(data.tensors[i : i + 16])) for i in range(0, len(data.tensors), 16)]).numpy()
    clfs = {name: Classifier(bundle, format=name, unknown=False) for name in formats}
    latency = _latency_p50(clfs, data.tensors[:1], runs)
    result: dict[str, Any] = {"images": len(data.paths), "labelled": data.targets is not None, "skipped": data.skipped,
                              "torch": {"top1": accuracy_against(ref, None, data.targets)["top1"]}, "formats": {}}
    for name, clf in clfs.items():
        result["formats"][name] = {**accuracy_against(clf.logits_from_tensor(data.tensors), ref, data.targets),
                                   "latency_ms_p50": latency[name]}
    return result


def compare_with_fp32(fp32_path: Path, model_path: Path, images: Sequence[Path], runs: int = 50,
                      threads: int | None = None) -> dict[str, Any]:
    """Top-1 agreement with FP32 on ``images`` and batch-1 latency of both."""
    clfs = {"fp32": Classifier(fp32_path, threads=threads, unknown=False),
            "other": Classifier(model_path, threads=threads, unknown=False)}
    batch, _, _ = preprocess_files(images, clfs["fp32"].contract)
    ref, out = clfs["fp32"].logits_from_tensor(batch), clfs["other"].logits_from_tensor(batch)
    latency = _latency_p50(clfs, batch[:1], runs, warmup=5)
    return {
        "images": len(batch),
        "top1_agreement_vs_fp32": accuracy_against(out, ref, None)["agreement_vs_torch"],
        "latency_ms_p50": latency["other"],
        "fp32_latency_ms_p50": latency["fp32"],
        "latency_ratio_vs_fp32": round(latency["other"] / latency["fp32"], 3),
        "runs": runs,
        "threads": threads or "backend default",
    }
