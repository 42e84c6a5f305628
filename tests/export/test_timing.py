"""The interleaved timer's bookkeeping: blocks, settling and stopping rules (not the machine's speed)."""

from __future__ import annotations

import time

import pytest
from edgeport.export.timing import percentiles_ms, time_interleaved
from edgeport.runtime.errors import UsageError


class ContendedRunner:
    """Slow while another runner ran last or recently (as spinning threads of a previous runtime make
    it on a 2-core machine), fast once it has run on its own for a while."""

    last: list[str] = [""]

    def __init__(self, name: str):
        self.name, self.calls, self.own_since = name, 0, 0.0

    def __call__(self) -> None:
        now = time.perf_counter()
        if ContendedRunner.last[0] != self.name:
            self.own_since = now
        ContendedRunner.last[0] = self.name
        self.calls += 1
        time.sleep(0.02 if now - self.own_since < 0.03 else 0.001)


def test_settling_keeps_the_previous_runners_aftermath_out_of_the_samples():
    runners = {n: ContendedRunner(n) for n in "ab"}
    samples = time_interleaved(runners, runs=20, warmup=1, block=5, settle_seconds=0.05)
    for name in "ab":
        assert len(samples.seconds[name]) == 20
        assert max(samples.seconds[name]) < 0.015, "a timed call still paid for the switch"
        assert runners[name].calls > 1 + 20  # warm-up + settling calls + timed calls
    unsettled = time_interleaved({n: ContendedRunner(n) for n in "ab"}, runs=20, warmup=1, block=5, settle_seconds=0)
    assert max(unsettled.seconds["a"]) >= 0.015  # without settling the first call of each block pays


def test_stopping_rules_and_percentile_order():
    calls: list[int] = []
    samples = time_interleaved({"x": lambda: None, "y": lambda: None}, runs=7, warmup=0, block=3,
                               on_round=calls.append, settle_seconds=0)
    assert calls == [3, 3, 1] and all(len(s) == 7 for s in samples.seconds.values())
    long = time_interleaved({"x": lambda: time.sleep(0.001)}, runs=1, warmup=0, min_seconds=0.05, max_runs=30)
    assert 1 < len(long.seconds["x"]) <= 30
    p = percentiles_ms(long.seconds["x"])
    assert p["p50"] <= p["p90"] <= p["p99"]
    with pytest.raises(UsageError):
        time_interleaved({"x": lambda: None}, runs=0)
