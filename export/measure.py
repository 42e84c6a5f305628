"""What an INT8 format costs and gains, measured at export on this CPU against FP32 ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from edgeport.runtime.classifier import Classifier
from edgeport.runtime.preprocess import preprocess_files

from .timing import time_interleaved

__all__ = ["compare_with_fp32"]


def compare_with_fp32(fp32_path: Path, model_path: Path, images: Sequence[Path], runs: int = 50,
                      threads: int | None = None) -> dict[str, Any]:
    """Top-1 agreement with FP32 on ``images`` and batch-1 latency of both, timed interleaved
    in settled blocks (``timing``) so that drift on a shared machine hits both alike."""
    fp32, other = Classifier(fp32_path, threads=threads), Classifier(model_path, threads=threads)
    batch, _, _ = preprocess_files(images, fp32.contract)
    ref, out = fp32.logits_from_tensor(batch), other.logits_from_tensor(batch)
    one = batch[:1]
    samples = time_interleaved({"fp32": lambda: fp32.logits_from_tensor(one), "other": lambda: other.logits_from_tensor(one)},
                               runs=runs, warmup=5)
    p50_fp32, p50_other = samples.p50_ms("fp32"), samples.p50_ms("other")
    return {
        "images": len(batch),
        "top1_agreement_vs_fp32": float((ref.argmax(1) == out.argmax(1)).mean()),
        "latency_ms_p50": round(p50_other, 3),
        "fp32_latency_ms_p50": round(p50_fp32, 3),
        "latency_ratio_vs_fp32": round(p50_other / p50_fp32, 3),
        "runs": runs,
        "threads": threads or "backend default",
    }
