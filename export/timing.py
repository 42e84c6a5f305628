"""Interleaved latency measurement shared by export (INT8 vs FP32, release gates) and edge-bench.

Runners are timed in rounds (A×k B×k C×k, A×k B×k C×k …) so that drift on a shared machine —
another process waking up, frequency scaling — hits every format alike instead of whichever happened
to run then. Each block starts with an untimed settling phase: a runtime that has just finished
leaves its worker threads spinning for a while (onnxruntime's do — turning its spinning off removed
most of the slowdown of OpenVINO run right after it; OpenVINO's TBB and PyTorch's OpenMP workers
spin by design too), and on a 2-core machine those spinners steal the cores of the next runtime.
Measured with call-by-call interleaving (A B C A B C …, MobileNetV2, batch 1, 2 threads, 2-core
AMD EPYC): onnxruntime FP32 p50 18.5 ms against 6.7 ms timed alone; OpenVINO needed about six
calls (~60 ms) after an onnxruntime call before it ran at its own speed, and a 30 ms sleep between
calls did not help. Settling for 0.1 s per block brings every format back to its solo figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from edgeport.runtime.errors import UsageError

__all__ = ["LatencySamples", "time_interleaved", "percentiles_ms", "settle", "SETTLE_SECONDS"]

#: Untimed running before each timed block (see the module docstring for the measurement behind it).
SETTLE_SECONDS = 0.1


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


def settle(run: Callable[[], object], seconds: float = SETTLE_SECONDS) -> None:
    """Untimed calls until ``seconds`` have passed (at least one): the previous runner's threads park."""
    until = time.perf_counter() + seconds
    run()
    while time.perf_counter() < until:
        run()


def time_interleaved(runners: Mapping[str, Callable[[], object]], runs: int, warmup: int = 3,
                     min_seconds: float = 0.0, max_runs: int | None = None,
                     on_round: Callable[[int], None] | None = None, block: int = 10,
                     settle_seconds: float = SETTLE_SECONDS) -> LatencySamples:
    """Call every runner ``warmup`` times (first calls allocate and pick kernels), then time rounds —
    per runner: settle for ``settle_seconds`` untimed, then ``block`` timed calls — until every runner
    has at least ``runs`` timed calls *and* ``min_seconds`` have passed (capped at ``max_runs`` calls
    per runner). ``on_round`` gets the number of calls each runner added in that round."""
    if runs < 1 or block < 1:
        raise UsageError("runs and block must be ≥ 1")
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    began = time.perf_counter()
    done = 0
    while done < runs or (time.perf_counter() - began < min_seconds and (max_runs is None or done < max_runs)):
        calls = min(block, runs - done) if done < runs else block
        if max_runs is not None:
            calls = max(1, min(calls, max_runs - done))
        for name, run in runners.items():
            if len(runners) > 1 and settle_seconds > 0:
                settle(run, settle_seconds)
            for _ in range(calls):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        done += calls
        if on_round is not None:
            on_round(calls)
    return LatencySamples(times)
