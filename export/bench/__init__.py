"""edge-bench: every deployed format of a model against its PyTorch original on the same images
(accuracy, latency, throughput, preprocessing, cold start, peak RSS), as a table, JSON and a plot."""

from __future__ import annotations

__all__ = ["BenchOptions", "run_benchmark", "BENCH_SCHEMA_VERSION"]


def __getattr__(name: str):
    if name in ("BenchOptions", "run_benchmark"):  # lazy: the package must import on a device without tqdm/torch
        from . import run

        return getattr(run, name)
    if name == "BENCH_SCHEMA_VERSION":
        from .report import BENCH_SCHEMA_VERSION

        return BENCH_SCHEMA_VERSION
    raise AttributeError(name)
