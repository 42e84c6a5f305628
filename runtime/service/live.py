"""What each source is doing now, for the review page and the Home Assistant FPS sensor: its latest frame and
answer, its frame rate, and its last error or reconnect.

A ``LiveView`` is both a capturer (``consider``: the stream loop shows it every frame with its result) and a sink
(it is called with every record, events included). It keeps one frame per source, by reference: the JPEG is encoded
only when the page asks for it, so a box nobody looks at pays nothing but a few dict updates per frame.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..frames import Frame
from ..records import StreamResult
from ..stream import Stats
from ..stream.loop import Capturer
from .capture import frame_picture

__all__ = ["LiveView", "FanOut", "FPS_WINDOW_S"]

#: FPS is the number of frames classified in this many seconds, divided by it (less while a source is younger).
FPS_WINDOW_S = 10.0


@dataclass
class _Latest:
    frame: Frame | None = None
    record: dict | None = None
    times: deque = field(default_factory=lambda: deque(maxlen=4096))
    first: float | None = None
    last_error: str | None = None
    last_error_time: str | None = None
    last_event: dict | None = None


class LiveView:
    """Per source: the latest frame and record, the frames of the last ``FPS_WINDOW_S`` seconds, the last error."""

    def __init__(self, stats: Stats | None = None, quality: int = 80):
        self.stats, self.quality = stats, quality
        self._lock = threading.Lock()
        self._sources: dict[str, _Latest] = {}

    def _of(self, source_id: str) -> _Latest:
        return self._sources.setdefault(source_id, _Latest())

    def consider(self, frame: Frame, result: StreamResult) -> None:
        now = time.monotonic()
        with self._lock:
            latest = self._of(result.source_id or frame.source_id or "default")
            latest.frame = frame
            latest.times.append(now)
            if latest.first is None:
                latest.first = now

    def __call__(self, record: dict) -> None:
        source_id = record.get("source_id") or "default"
        with self._lock:
            latest = self._of(source_id)
            if "event" in record:
                latest.last_event = record
                if record.get("error"):
                    latest.last_error, latest.last_error_time = record["error"], record.get("time")
                return
            latest.record = record
            if record.get("error"):
                latest.last_error, latest.last_error_time = record["error"], None

    def fps(self, source_id: str) -> float:
        """Frames per second over the last ``FPS_WINDOW_S`` seconds (over the source's life while it is younger)."""
        now = time.monotonic()
        with self._lock:
            latest = self._sources.get(source_id)
            if latest is None or latest.first is None:
                return 0.0
            recent = sum(1 for t in latest.times if now - t <= FPS_WINDOW_S)
            span = min(FPS_WINDOW_S, max(now - latest.first, 1e-3))
        return recent / span if recent > 1 or span >= 1.0 else 0.0

    def source_ids(self) -> list[str]:
        with self._lock:
            known = list(self._sources)
        if self.stats is not None:
            with self.stats.lock:
                known += [s for s in self.stats.sources if s not in known]
        return known

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per source: label, score, state (when records carry one), fps, status (up/lost/ended), outages, error."""
        out: dict[str, dict[str, Any]] = {}
        for source_id in self.source_ids():
            fps = self.fps(source_id)
            with self._lock:
                latest = self._sources.get(source_id) or _Latest()
                record = latest.record or {}
                event = latest.last_event
                top = record.get("top_k") or [{}]
                view = {"label": record.get("label"), "score": record.get("score", top[0].get("score")),
                        "state": record.get("state"),
                        "frame": record.get("frame"), "has_frame": latest.frame is not None, "fps": round(fps, 2),
                        "last_error": latest.last_error, "last_event": event.get("event") if event else None,
                        "last_event_time": event.get("time") if event else None}
            if self.stats is not None:
                with self.stats.lock:
                    s = self.stats.sources.get(source_id)
                    if s is not None:
                        view.update(status=s.state, frames=s.frames, errors=s.errors, drops=s.drops, outages=s.outages)
            out[source_id] = view
        return out

    def latest_jpeg(self, source_id: str) -> bytes | None:
        """The source's latest frame as a JPEG, encoded now (None before its first frame)."""
        with self._lock:
            latest = self._sources.get(source_id)
            frame = latest.frame if latest is not None else None
        picture = frame_picture(frame) if frame is not None else None
        if picture is None:
            return None
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=self.quality)
        return buffer.getvalue()


class FanOut:
    """One capturer for the stream loop that shows every frame to several (the capture, the live view)."""

    def __init__(self, capturers: Sequence[Capturer]):
        self.capturers = list(capturers)

    def consider(self, frame: Frame, result: StreamResult) -> None:
        for capturer in self.capturers:
            capturer.consider(frame, result)
