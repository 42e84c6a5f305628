"""Per-source counters for /healthz and /metrics, updated by the inference loop, read by the health server.

Plain numbers under one lock (no metrics library here): the service runs without prometheus-client, and
the exposition in ``health.py`` builds its metric families from a snapshot at scrape time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Stats", "SourceStats", "LATENCY_BUCKETS_S"]

#: Inference latency histogram buckets (seconds): a few ms on a desktop CPU to a second on a small ARM board.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class SourceStats:
    live: bool
    frames: int = 0
    errors: int = 0
    drops: int = 0
    queue_depth: int = 0
    last_frame: float | None = None  # time.monotonic() of the last classified frame
    state: str = "starting"  # starting, up, lost, ended
    outages: int = 0


class Delivery(Protocol):
    """What /metrics reads of a records' destination (``service.mqtt.MqttSink``)."""

    connected: bool
    pending: int
    dropped: int


@dataclass
class Stats:
    sources: dict[str, SourceStats] = field(default_factory=dict)
    model_sha256: str | None = None
    model_format: str | None = None
    started: float = field(default_factory=time.monotonic)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_count: int = 0
    latency_sum_s: float = 0.0
    capture_errors: int = 0  # captures that failed to write (the service's capture reports them here)
    delivery: Delivery | None = None  # the MQTT sink, read at scrape time: connected, queued, dropped
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_source(self, source_id: str, live: bool) -> None:
        with self.lock:
            self.sources[source_id] = SourceStats(live)

    def frame(self, source_id: str, ok: bool) -> None:
        with self.lock:
            s = self.sources[source_id]
            s.frames += 1
            s.errors += not ok
            s.last_frame, s.state = time.monotonic(), "up"

    def inference(self, seconds: float, frames: int) -> None:
        """One inference call of ``frames`` frames: each frame observes its share."""
        per = seconds / max(1, frames)
        with self.lock:
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if per <= bound:
                    self.bucket_counts[i] += frames
            self.latency_count += frames
            self.latency_sum_s += seconds

    def capture_error(self) -> None:
        with self.lock:
            self.capture_errors += 1

    def event(self, source_id: str, event: str) -> None:
        with self.lock:
            s = self.sources[source_id]
            if event == "source_lost":
                s.state, s.outages = "lost", s.outages + 1
            elif event == "source_back":
                s.state = "up"
            elif event == "source_ended":
                s.state = "ended"

    def health(self, max_age_s: float) -> tuple[bool, dict]:
        """(healthy, body): healthy while every source that has not ended classified a frame in the last
        ``max_age_s`` seconds (a source still starting gets that long from the start)."""
        now, body, healthy = time.monotonic(), {}, True
        with self.lock:
            for source_id, s in self.sources.items():
                age = now - (s.last_frame if s.last_frame is not None else self.started)
                fresh = s.state == "ended" or age <= max_age_s
                healthy &= fresh
                body[source_id] = {"healthy": fresh, "state": s.state, "frames": s.frames, "errors": s.errors,
                                   "drops": s.drops, "queue_depth": s.queue_depth, "outages": s.outages,
                                   "last_frame_age_s": None if s.last_frame is None else round(now - s.last_frame, 3)}
        return healthy, {"healthy": healthy, "max_age_s": max_age_s, "model_sha256": self.model_sha256, "sources": body}
