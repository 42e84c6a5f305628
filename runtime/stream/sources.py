"""Sources of the service: an id, a way to open its frames, whether it is live, and reconnects with backoff.

A live source (camera, network stream) that fails to open or stops delivering is opened again with capped
exponential backoff; it yields one ``source_lost`` event per outage (not one per attempt) and one
``source_back`` event with its first frame after the outage. A file source (video file, folder, files)
ends when its frames end.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import FrameSourceError, UsageError
from ..frames import Frame, camera_frames, file_frames, is_url, paced, url_frames, video_frames, watch_frames
from ..inputs import expand_inputs
from ..redact import redact_url
from .regions import Region
from .states import Smoothing

__all__ = ["Backoff", "Source", "SourceEvent", "camera_source", "video_source", "url_source", "watch_source", "file_source",
           "frames_source", "parse_names", "RESERVED_IDS"]

#: Ids that would collide with the service's own MQTT topics (``<prefix>/status``, ``<prefix>/dropped``).
RESERVED_IDS = frozenset({"status", "dropped"})
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # an MQTT topic level and a Prometheus label value without escaping


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial`` seconds, doubled after each failed attempt, at most ``maximum``."""

    initial: float = 0.5
    maximum: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * 2, self.maximum)


@dataclass(frozen=True)
class SourceEvent:
    """A source went away (``source_lost``, with ``error``) or came back (``source_back``, with ``down_s``)."""

    source_id: str
    source: str
    event: str
    error: str | None = None
    down_s: float | None = None
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def record(self) -> dict:
        record = {"source_id": self.source_id, "source": self.source, "event": self.event, "ok": self.event == "source_back",
                  "time": self.time}
        if self.error is not None:
            record["error"] = self.error
        if self.down_s is not None:
            record["down_s"] = round(self.down_s, 3)
        return record


@dataclass
class Source:
    """One source: ``open()`` gives its frames; ``live`` sources drop stale frames and reconnect. ``regions``: each
    frame is classified once per region, as streams of their own; ``smoothing``: its streams' states (None: none)."""

    id: str
    name: str
    open: Callable[[], Iterable[Frame]]
    live: bool = False
    backoff: Backoff | None = None
    tag: bool = True  # False: frames keep their own source_id (the single anonymous source of ``classify_stream``)
    regions: tuple[Region, ...] = ()
    smoothing: Smoothing | None = None

    def frames(self, stop: threading.Event) -> Iterator[Frame | SourceEvent]:
        """Frames tagged with this source's id; for a live source with a ``backoff``, reconnecting until ``stop``."""
        if not (self.live and self.backoff):
            for frame in self.open():
                yield _tagged(frame, self.id) if self.tag else frame
            return
        down_since: float | None = None
        delays = self.backoff.delays()
        while not stop.is_set():
            try:
                for frame in self.open():
                    if down_since is not None:
                        yield SourceEvent(self.id, self.name, "source_back", down_s=time.monotonic() - down_since)
                        down_since, delays = None, self.backoff.delays()
                    yield _tagged(frame, self.id)
                    if stop.is_set():
                        return
                reason = "the source stopped delivering frames"
            except FrameSourceError as exc:
                reason = str(exc)
            if down_since is None:
                down_since = time.monotonic()
                yield SourceEvent(self.id, self.name, "source_lost", error=f"{reason}; retrying with backoff")
            stop.wait(next(delays))


def _tagged(frame: Frame, source_id: str) -> Frame:
    return replace(frame, source_id=source_id)


def camera_source(source_id: str, index: int, every: int = 1, max_fps: float | None = None,
                  backoff: Backoff | None = Backoff()) -> Source:
    return Source(source_id, f"camera:{index}", lambda: paced(camera_frames(index, every), max_fps, live=True), True, backoff)


def url_source(source_id: str, url: str, every: int = 1, max_fps: float | None = None,
               backoff: Backoff | None = Backoff()) -> Source:
    return Source(source_id, redact_url(url), lambda: paced(url_frames(url, every), max_fps, live=True), True, backoff)


def video_source(source_id: str, path: str, every: int = 1, max_fps: float | None = None,
                 backoff: Backoff | None = Backoff()) -> Source:
    """A video file, or a network stream when ``path`` is a URL (``rtsp://``, ``http://`` …)."""
    if is_url(path):
        return url_source(source_id, path, every, max_fps, backoff)
    frames = video_frames(path, every)  # opened now: a missing file is a usage error at start, not an outage
    return Source(source_id, path, lambda: paced(frames, max_fps))


def watch_source(source_id: str, folder: str, since: float | None = None, idle_timeout: float | None = None,
                 max_files: int | None = None, max_fps: float | None = None) -> Source:
    frames = watch_frames(folder, idle_timeout=idle_timeout, max_files=max_files, since=since)
    return Source(source_id, folder, lambda: paced(frames, max_fps))


def file_source(source_id: str, inputs: Sequence[str], max_fps: float | None = None) -> Source:
    items = expand_inputs(inputs)
    return Source(source_id, ",".join(inputs), lambda: paced(file_frames(items), max_fps))


def frames_source(source_id: str, frames: Iterable[Frame], live: bool = False) -> Source:
    """Any iterable of frames (or images) as a source, for the Python API."""
    return Source(source_id, source_id, lambda: frames, live)


def check_id(source_id: str) -> str:
    if not _ID.match(source_id) or source_id in RESERVED_IDS:
        raise UsageError(f"source id {source_id!r}: use 1-64 letters, digits, '_' or '-' (not {', '.join(sorted(RESERVED_IDS))}); "
                         "it becomes an MQTT topic level and a metrics label")
    return source_id


def parse_names(names: Sequence[str], given: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``--name ID=SOURCE`` options → {(kind, source): id}; ``given`` is every (kind, source) on the command line.
    The rest get ``<kind><n>`` (``camera1``, ``video2``, ``watch1``) in command-line order."""
    ids: dict[tuple[str, str], str] = {}
    named: dict[str, str] = {}
    for option in names:
        source_id, sep, target = option.partition("=")
        if not sep or not target:
            raise UsageError(f"--name {option!r}: write ID=SOURCE, e.g. --name door=0 or --name yard=rtsp://…")
        matches = [g for g in given if g[1] == target]
        if not matches:
            raise UsageError(f"--name {option!r}: {target!r} is none of the sources given "
                             f"({', '.join(s for _, s in given) or 'none'}); name a --camera, --video or --watch value")
        if target in named:
            raise UsageError(f"--name {named[target]}={target} and --name {option}: one source, two names; keep one")
        named[target] = source_id
        ids[matches[0]] = check_id(source_id)
    counts: dict[str, int] = {}
    for kind, target in given:
        counts[kind] = counts.get(kind, 0) + 1
        ids.setdefault((kind, target), f"{kind}{counts[kind]}")
    if len(set(ids.values())) != len(ids):
        raise UsageError(f"source ids must be unique; got {sorted(ids.values())}")
    return ids
