"""``[homeassistant]`` / ``--ha-discovery``: Home Assistant MQTT discovery, so each source's state, label and FPS
appear in Home Assistant with no YAML.

Per source, three retained sensor configs under ``<discovery prefix>/sensor/<node>_<source>/<kind>/config``
(``node_id`` ``<node>_<source>``, ``object_id`` the kind), one device per source:

- ``state``: the stable state on ``<prefix>/<source>/state`` (a JSON with ``label``), published by the box's
  state smoothing;
- ``label``: the label of the latest frame, from the per-frame records on ``<prefix>/<source>``;
- ``fps``: frames per second, from ``<prefix>/<source>/stats``, a retained JSON this module publishes every
  ``stats_interval`` seconds (``fps``, ``frames``, ``errors``, ``status``).

All three use the availability topic the sink already keeps, ``<prefix>/status`` (``online``, and ``offline`` from
``close()`` or the last will). The configs are published again at every (re)connection: a broker restarted without
persistence has lost its retained messages.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Sequence

from .live import LiveView
from .mqtt import MqttSink

__all__ = ["Discovery", "discovery_configs", "default_node", "SENSORS"]

#: The sensors of each source: kind → (name, topic under <prefix>/<source>, value template, extra keys).
SENSORS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "state": ("state", "/state", "{{ value_json.label }}", {"icon": "mdi:state-machine"}),
    # the records' topic also carries the source's events (source_lost …): those show as the event's name
    "label": ("label", "", "{{ value_json.label if value_json.label is defined else (value_json.event | default('error')) }}",
              {"icon": "mdi:tag"}),
    "fps": ("FPS", "/stats", "{{ value_json.fps }}", {"unit_of_measurement": "fps", "state_class": "measurement",
                                                     "icon": "mdi:speedometer"}),
}


def default_node() -> str:
    """This machine's host name as a topic level and an id: letters, digits, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "edgeport"


def _software() -> str:
    try:
        return version("edgeport")
    except PackageNotFoundError:
        return "unknown"


def discovery_configs(prefix: str, sources: Sequence[str], node: str,
                      discovery_prefix: str = "homeassistant") -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of every sensor config: ``prefix`` is the box's MQTT prefix (records, status, stats)."""
    out = []
    for source in sources:
        device = {"identifiers": [f"edgeport_{node}_{source}"], "name": f"{node} {source}", "manufacturer": "edgeport",
                  "model": "camera box source", "sw_version": _software()}
        for kind, (name, suffix, template, extra) in SENSORS.items():
            payload = {"name": name, "unique_id": f"edgeport_{node}_{source}_{kind}",
                       "state_topic": f"{prefix}/{source}{suffix}", "value_template": template,
                       "availability_topic": f"{prefix}/status", "payload_available": "online",
                       "payload_not_available": "offline", "device": device, "origin": {"name": "edgeport"}, **extra}
            out.append((f"{discovery_prefix}/sensor/{node}_{source}/{kind}/config", payload))
    return out


class Discovery:
    """Announces the sensors at every connection of ``sink`` and publishes each source's stats every ``interval`` s."""

    def __init__(self, sink: MqttSink, sources: Sequence[str], live: LiveView, node: str | None = None,
                 discovery_prefix: str = "homeassistant", interval: float = 5.0):
        self.sink, self.sources, self.live, self.interval = sink, list(sources), live, interval
        self.prefix = sink.target.prefix
        self.configs = discovery_configs(self.prefix, self.sources, node or default_node(), discovery_prefix)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stats_loop, name="edgeport-ha-stats", daemon=True)

    def announce(self) -> None:
        for topic, payload in self.configs:
            self.sink.publish_retained(topic, json.dumps(payload).encode())
        self.publish_stats()

    def publish_stats(self) -> None:
        snapshot = self.live.snapshot()
        for source in self.sources:
            view = snapshot.get(source, {})
            stats = {"fps": view.get("fps", 0.0), "frames": view.get("frames", 0), "errors": view.get("errors", 0),
                     "status": view.get("status")}
            self.sink.publish_retained(f"{self.prefix}/{source}/stats", json.dumps(stats).encode())

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish_stats()

    def start(self) -> Discovery:
        self.sink.on_connected.append(self.announce)
        if self.sink.connected:  # connected before the hook was in place
            self.announce()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the stats; the last one (every frame counted) goes out before the sink's ``offline``."""
        self._stop.set()
        self._thread.join(self.interval + 1)
        self.publish_stats()
