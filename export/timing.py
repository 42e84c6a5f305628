"""Interleaved latency measurement shared by export (INT8 vs FP32, release gates) and edge-bench.

Runners are timed in turn (A B C A B C …) so that drift on a shared machine — another process
waking up, frequency scaling — hits every format alike instead of whichever happened to run then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

__all__ = ["LatencySamples", "time_interleaved", "percentiles_ms"]


@dataclass(frozen=True)
class LatencySamples:
    """Seconds per call, one list per runner, in the order they were taken."""

    seconds: dict[str, list[float]]

    def p50_ms(self, name: str) -> float:
        return percentiles_ms(self.seconds[name])["p50"]


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 in milliseconds (numpy's linear interpolation, so p50 ≤ p90 ≤ p99 always)."""
    p50, p90, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 90, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4)}


def time_interleaved(runners: Mapping[str, Callable[[], object]], runs: int, warmup: int = 3,
                     min_seconds: float = 0.0, max_runs: int | None = None,
                     on_round: Callable[[], None] | None = None) -> LatencySamples:
    """Call every runner ``warmup`` times (first calls allocate and pick kernels), then time rounds of
    one call each until at least ``runs`` rounds *and* ``min_seconds`` of measuring have passed
    (capped at ``max_runs`` rounds)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    began = time.perf_counter()
    rounds = 0
    while rounds < runs or (time.perf_counter() - began < min_seconds and (max_runs is None or rounds < max_runs)):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        rounds += 1
        if on_round is not None:
            on_round()
    return LatencySamples(times)
