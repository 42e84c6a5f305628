"""What a camera box runs around the stream loop: its sources built from the config, the MQTT sink, the health
server, the capture, Home Assistant discovery and the review page, opened in that order and closed in the reverse
one."""

from __future__ import annotations

from typing import Callable, Sequence

from ..classifier import Classifier
from ..errors import DeliveryError
from ..manifest import sha256_file
from ..stream import (
    Backoff,
    Sink,
    Source,
    Stats,
    camera_source,
    file_source,
    url_source,
    video_source,
    watch_source,
)
from ..stream.loop import Capturer
from .capture import Capture
from .config import ServiceConfig, SourceConfig
from .live import FanOut, LiveView

__all__ = ["Box", "build_sources"]


def build_sources(configs: Sequence[SourceConfig], *, started: float, reconnect_max: float) -> list[Source]:
    """One ``Source`` per configured source (a missing video file or folder is a usage error here, at start)."""
    backoff = Backoff(min(0.5, reconnect_max), reconnect_max)
    sources = []
    for s in configs:
        if s.kind == "files":
            sources.append(file_source(s.id, list(s.target), s.max_fps))
        elif s.kind == "camera":
            sources.append(camera_source(s.id, int(s.target), s.every, s.max_fps, backoff))
        elif s.kind == "url":
            sources.append(url_source(s.id, str(s.target), s.every, s.max_fps, backoff))
        elif s.kind == "video":
            sources.append(video_source(s.id, str(s.target), s.every, s.max_fps, backoff))
        else:
            sources.append(watch_source(s.id, str(s.target), since=started, idle_timeout=s.watch_timeout,
                                        max_files=s.max_files, max_fps=s.max_fps))
        sources[-1].regions, sources[-1].smoothing = s.regions, s.states()
    return sources


class Box:
    """The service's parts for one loaded model: ``sinks`` (MQTT), ``capture``, ``stats`` (read by the health
    server), and ``close()``. Nothing is opened that the config does not ask for."""

    def __init__(self, config: ServiceConfig, clf: Classifier, warn: Callable[[str], None] = lambda message: None):
        """``warn`` gets the lines an operator must see that are not records (a capture that cannot write)."""
        facts = clf.bundle_facts()
        self.stats = Stats(model_sha256=facts["sha256"] or sha256_file(clf.model_path), model_format=clf.format)
        self.sinks: list[Sink] = []
        self.capture: Capture | None = None
        self.mqtt = None
        self.review = None
        # The latest frame, answer and FPS per source, for the review page and the Home Assistant FPS sensor.
        self.live = LiveView(self.stats) if config.ui is not None or config.homeassistant is not None else None
        self._closers: list[Callable[[], object]] = []
        try:
            if config.mqtt is not None:
                from .mqtt import MqttSink  # paho-mqtt is an extra: imported only when MQTT is asked for

                m = config.mqtt
                self.mqtt = MqttSink(m.url, qos=m.qos, ca_file=m.ca, queue_max=m.queue,
                                     reconnect_max=config.reconnect_max, username=m.username, password=m.password,
                                     warn=warn)
                self.sinks.append(self.mqtt)
                self._closers.append(self.mqtt.close)
                self.stats.delivery = self.mqtt
            if config.capture is not None:
                c = config.capture
                self.capture = Capture(c.dir, c.below, c.margin, c.rate, c.max_mb, self.stats.model_sha256,
                                       on_error=self._capture_failed(warn))
            if config.health is not None:
                from .health import HealthServer  # prometheus-client is an extra

                h = config.health
                health = HealthServer(self.stats, h.port, h.host, h.max_age).start()
                self._closers.append(health.stop)
            if self.live is not None:
                self.sinks.append(self.live)
            if config.homeassistant is not None and self.mqtt is not None:
                from .discovery import Discovery

                ha = config.homeassistant
                discovery = Discovery(self.mqtt, [s.id for s in config.sources], self.live, ha.node, ha.discovery_prefix,
                                      ha.stats_interval).start()
                self._closers.append(discovery.stop)
            if config.ui is not None and config.capture is not None:
                from .review import ReviewStore
                from .review_server import ReviewServer

                u = config.ui
                # the labels of the model serving now: a hot reload swaps clf's model in place
                store = ReviewStore(config.capture.dir, u.dataset, lambda: clf.labels, u.labels_csv)
                self.review = ReviewServer(u, store, self.live).start()
                self._closers.append(self.review.stop)
        except BaseException:
            self.close()
            raise

    @property
    def observer(self) -> Capturer | None:
        """What the stream loop shows every frame to: the capture and the live view, either, or None."""
        seen = [c for c in (self.capture, self.live) if c is not None]
        return FanOut(seen) if len(seen) > 1 else (seen[0] if seen else None)

    def _capture_failed(self, warn: Callable[[str], None]) -> Callable[[str], None]:
        def report(message: str) -> None:
            self.stats.capture_error()
            warn(f"warning: {message}")
        return report

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    def failures(self) -> list[DeliveryError]:
        """After ``close()``: what the service's parts failed to do (records that never reached the broker)."""
        if self.mqtt is not None and self.mqtt.undelivered:
            return [DeliveryError(f"{self.mqtt.undelivered} records never reached the MQTT broker {self.mqtt.where} "
                                  f"(dropped from the full queue, or still queued at the end); check that the broker is "
                                  "up and reachable")]
        return []
