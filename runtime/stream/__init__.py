"""Streams: frame sources (files, videos, cameras, network streams, watched folders) with reconnects, their
bounded queues, the per-source counters, named regions of a picture (``regions``), stable states (``states``), and
the one loop that classifies them (``loop.Stream``)."""

from .hub import Hub
from .loop import AUTO_BATCH_MAX, Sink, Stream, classify_stream, record_of
from .regions import RESERVED_REGIONS, Region, RegionCropper
from .sources import (
    Backoff,
    Source,
    SourceEvent,
    camera_source,
    check_id,
    file_source,
    frames_source,
    parse_names,
    url_source,
    video_source,
    watch_source,
)
from .states import DEFAULT_SMOOTHING, SMOOTHERS, Smoothing, StateChange, States, StateTracker
from .stats import Stats

__all__ = ["Stream", "classify_stream", "record_of", "Sink", "AUTO_BATCH_MAX", "Hub", "Stats", "Backoff", "Source",
           "SourceEvent", "camera_source", "check_id", "file_source", "frames_source", "parse_names", "url_source",
           "video_source", "watch_source", "Region", "RegionCropper", "RESERVED_REGIONS", "Smoothing", "StateChange",
           "States", "StateTracker", "SMOOTHERS", "DEFAULT_SMOOTHING"]
