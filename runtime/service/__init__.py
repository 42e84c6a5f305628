"""The camera box as a service: several sources in one process and one model, reconnects, MQTT, health and
metrics, and the frames worth relabelling (docs/service.md).

Each source has its own thread that reads, decodes and preprocesses frames into its own bounded queue (a live
source drops the oldest frame when the queue is full, a file never does); one inference loop takes what is
ready from every queue and classifies it in one call. Sinks are plain callables that get each record.
"""

from .hub import Hub
from .run import MultiStream, record_of, serve
from .sources import (
           Backoff,
           Source,
           camera_source,
           file_source,
           frames_source,
           parse_names,
           url_source,
           video_source,
           watch_source,
)
from .stats import Stats

__all__ = ["Hub", "MultiStream", "record_of", "serve", "Backoff", "Source", "camera_source", "file_source", "frames_source", "parse_names",
           "url_source", "video_source", "watch_source", "Stats"]
