"""Stable states: per stream (a source, or one region of it) the frames' probabilities are smoothed, and a ``state``
record is emitted only when the smoothed label changes and then holds for ``hold`` frames. A camera box acts on
these ("the garage door is open"), not on single frames: one frame of the other class, a blanked or a garbled frame
must not flip a light. numpy only; the loop feeds it every result (``States.see``).

Two smoothers, measured side by side on a video of real photos in benchmarks/README.md ("Stable states"):
``vote``, the majority of the last ``window`` frames' labels, and ``ema``, an exponential moving average of the
probabilities with the span ``window`` (alpha = 2 / (window + 1)). A frame whose label is ``unknown`` (below the
threshold, or out of distribution) counts as the label ``unknown``, so a scene the model does not know becomes the
state ``unknown`` when it lasts, and a single such frame is smoothed away like any other. Frames with an error
(undecodable, corrupt) are skipped: they neither vote nor count towards a hold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from ..errors import UsageError
from ..records import UNKNOWN, StreamResult

__all__ = ["Smoothing", "StateChange", "StateTracker", "States", "SMOOTHERS", "DEFAULT_SMOOTHING"]

#: The smoothers by name; "off" (in the config and on the command line) means no state records.
SMOOTHERS = ("ema", "vote")


@dataclass(frozen=True)
class Smoothing:
    """How one stream's states are found: ``method`` (``vote`` or ``ema``), the ``window`` it looks at, and the
    ``hold``: frames the new smoothed label must last before its state record. The defaults (EMA of span 3, hold 3)
    gave no false change in 120 disturbed videos and the change 3.3 frames late on average (benchmarks/README.md,
    "Stable states"): the hold does most of the work, and a longer window spreads a burst of bad frames instead."""

    method: str = "ema"
    window: int = 3
    hold: int = 3

    def __post_init__(self) -> None:
        if self.method not in SMOOTHERS:
            raise UsageError(f"smoothing {self.method!r}: use {' or '.join(SMOOTHERS)} (or off for no state records)")
        for name in ("window", "hold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} {value!r}: a whole number of frames ≥ 1")


DEFAULT_SMOOTHING = Smoothing()


@dataclass(frozen=True)
class StateChange:
    """A stream's smoothed label changed and held: ``label`` since frame ``since_frame`` (its ``since_timestamp`` in
    the video, and ``since``, the UTC time it was classified); ``previous`` is None for a stream's first state."""

    source_id: str | None
    source: str
    region: str | None
    label: str
    score: float
    previous: str | None
    since: str
    since_frame: int | None
    since_timestamp: float | None
    confirmed_frame: int | None  # the frame that completed the hold, when the record was made

    def record(self) -> dict:
        """The state record (JSONL line; the retained MQTT payload on ``<prefix>/<source>[/<region>]/state``)."""
        return {"event": "state", "ok": True, "source_id": self.source_id, "source": self.source, "region": self.region,
                "label": self.label, "score": round(self.score, 6), "previous": self.previous, "since": self.since,
                "since_frame": self.since_frame, "since_timestamp": self.since_timestamp,
                "confirmed_frame": self.confirmed_frame}


@dataclass
class _Seen:
    """Where a run of one smoothed label began."""

    frame: int | None
    timestamp: float | None
    time: str
    count: int = 1


class StateTracker:
    """One stream's smoother and state machine."""

    def __init__(self, smoothing: Smoothing = DEFAULT_SMOOTHING):
        self.smoothing = smoothing
        self.labels: dict[str, int] = {}  # label → column; grows if a reloaded model brings new labels
        self.ema: np.ndarray | None = None
        self.votes: deque[tuple[int, np.ndarray]] = deque(maxlen=smoothing.window)
        self.state: str | None = None
        self.run_label: str | None = None
        self.run: _Seen | None = None

    def _vector(self, result: StreamResult) -> np.ndarray:
        """The frame's probabilities over every label seen so far: its top-k, or all on ``unknown``."""
        pairs: Sequence[tuple[str, float]] = ((UNKNOWN, 1.0),) if result.label == UNKNOWN else result.top
        for label, _ in pairs:
            self.labels.setdefault(label, len(self.labels))
        vector = np.zeros(len(self.labels))
        for label, score in pairs:
            vector[self.labels[label]] = score
        return vector

    @staticmethod
    def _grown(vector: np.ndarray, size: int) -> np.ndarray:
        return vector if len(vector) == size else np.pad(vector, (0, size - len(vector)))

    def smoothed(self, result: StreamResult) -> tuple[str, float]:
        """Feed one classified frame; the smoothed (label, score) after it."""
        vector = self._vector(result)
        n = len(vector)
        if self.smoothing.method == "ema":
            alpha = 2.0 / (self.smoothing.window + 1)
            self.ema = vector if self.ema is None else alpha * vector + (1 - alpha) * self._grown(self.ema, n)
            best = int(np.argmax(self.ema))
            score = float(self.ema[best])
        else:
            self.votes.append((int(np.argmax(vector)), vector))
            counts = np.bincount([v for v, _ in self.votes], minlength=n)
            tied = np.flatnonzero(counts == counts.max())
            # A tie keeps the state in force (a change needs a majority); otherwise the most recent of the tied.
            current = self.labels.get(self.state, -1) if self.state is not None else -1
            best = current if current in tied else next(v for v, _ in reversed(self.votes) if v in tied)
            score = float(np.mean([self._grown(p, n)[best] for _, p in self.votes]))
        label = next(name for name, column in self.labels.items() if column == best)
        return label, score

    def see(self, result: StreamResult, source: str, source_id: str | None) -> StateChange | None:
        """One result of this stream; a ``StateChange`` when its smoothed label changed and held ``hold`` frames."""
        if not result.ok or not result.top:
            return None
        label, score = self.smoothed(result)
        run = self.run
        if run is None or label != self.run_label:
            self.run_label = label
            run = self.run = _Seen(result.index, result.timestamp,
                                   datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
        else:
            run.count += 1
        if label == self.state or run.count < self.smoothing.hold:
            return None
        previous, self.state = self.state, label
        return StateChange(source_id, source, result.region, label, score, previous, run.time, run.frame, run.timestamp,
                           result.index)


@dataclass
class States:
    """The trackers of every stream of a loop, keyed by (source id, region); ``settings`` maps a source id to its
    ``Smoothing`` (a source without one has no states)."""

    settings: dict[str, Smoothing]
    trackers: dict[tuple[str, str | None], StateTracker] = field(default_factory=dict)

    def see(self, source_id: str, result: StreamResult) -> StateChange | None:
        smoothing = self.settings.get(source_id)
        if smoothing is None:
            return None
        key = (source_id, result.region)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = StateTracker(smoothing)
        return tracker.see(result, result.source, result.source_id)
