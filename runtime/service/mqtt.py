"""MQTT out: each record as JSON on ``<prefix>/<source id>`` (``…/<region>`` for a region's), each state record
retained on ``<prefix>/<source id>[/<region>]/state``, a retained ``<prefix>/status`` (online/offline, the
last will covering a crash), and a bounded queue while the broker is away (needs the ``[mqtt]`` extra, paho-mqtt).

Order and bounds: records wait in one in-memory queue of at most ``queue_max`` (the oldest dropped and counted
when it is full) and one publisher thread hands them to paho while connected, at most ``MAX_INFLIGHT`` unacknowledged
at a time. After a disconnect paho resends its unacknowledged QoS 1 messages first; new ones follow only once those
are acknowledged, so a subscriber sees records in order (QoS 1 is at-least-once: a resent one may come twice). The
count of dropped records goes to ``<prefix>/dropped`` once connected again.

Delivery failures are never silent: ``warn`` gets one line when the broker cannot be reached or goes away (and one
when it is back), ``connected`` is what /metrics shows, and ``undelivered`` after ``close()`` counts every record
that never reached the broker (dropped from the full queue, or still queued when the service stopped).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from ..errors import MissingDependencyError, UsageError
from ..redact import redact_url

__all__ = ["MqttTarget", "MqttSink", "parse_mqtt_url", "MAX_INFLIGHT", "DEFAULT_QUEUE"]

#: Messages handed to paho and not yet acknowledged: bounds paho's own queue (and the resend after a reconnect).
MAX_INFLIGHT = 20
#: Records kept while the broker is away.
DEFAULT_QUEUE = 10_000


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    prefix: str
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user:pass@]host[:port]/topic/prefix`` (``mqtts://`` for TLS, default ports 1883 / 8883)."""
    parts = urlsplit(url)
    shown = redact_url(url)  # a usage error must not echo the broker's password
    if parts.scheme not in ("mqtt", "mqtts"):
        raise UsageError(f"--mqtt {shown!r}: write mqtt://[user@]host[:port]/prefix (or mqtts:// for TLS)")
    prefix = parts.path.strip("/")
    if not parts.hostname or not prefix or "+" in prefix or "#" in url or "?" in url or "//" in prefix:
        raise UsageError(f"--mqtt {shown!r}: needs a host and a topic prefix without wildcards, e.g. mqtt://broker/edgeport")
    if prefix.startswith("$"):
        raise UsageError(f"--mqtt {shown!r}: a topic starting with '$' ({prefix!r}) is the broker's own ($SYS …), and a "
                         "broker drops what clients publish there; pick another prefix, e.g. edgeport")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise UsageError(f"--mqtt {shown!r}: bad port") from exc
    return MqttTarget(parts.hostname, port, prefix, parts.scheme == "mqtts",
                      unquote(parts.username) if parts.username else None, unquote(parts.password) if parts.password else None)


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise MissingDependencyError("--mqtt needs paho-mqtt: pip install 'edgeport[mqtt]'") from exc
    return mqtt


class MqttSink:
    """A sink (a plain callable taking a record) publishing to an MQTT broker; ``close()`` sends ``offline``."""

    def __init__(self, url: str, qos: int = 1, ca_file: str | os.PathLike | None = None, queue_max: int = DEFAULT_QUEUE,
                 client_id: str | None = None, reconnect_max: float = 30.0, keepalive: int = 30,
                 username: str | None = None, password: str | None = None,
                 warn: Callable[[str], None] = lambda message: None):
        """``username``/``password`` (from a file or the environment: docs/service.md) win over any in ``url``."""
        mqtt = _paho()
        self.target, self.qos = parse_mqtt_url(url), qos
        if username is not None or password is not None:
            self.target = replace(self.target, username=username or self.target.username, password=password)
        if qos not in (0, 1, 2):
            raise UsageError(f"MQTT QoS {qos}: use 0, 1 or 2")
        if ca_file is not None and not self.target.tls:
            raise UsageError("--mqtt-ca is for TLS: use an mqtts:// URL")
        self.status_topic, self.dropped_topic = f"{self.target.prefix}/status", f"{self.target.prefix}/dropped"
        self._queue: deque[tuple[str, bytes, bool]] = deque()  # topic, payload, retained
        self.queue_max, self.dropped, self.published = queue_max, 0, 0
        self._unreported = 0  # dropped records not yet announced on <prefix>/dropped
        self._inflight: set[int] = set()
        self._early_acks: set[int] = set()
        self._publishing = False
        self._cond = threading.Condition()
        self._connected = False
        self._closing = False
        self._warn, self._down_reported = warn, False
        self.undelivered = 0
        self.on_connected: list[Callable[[], None]] = []  # run at each (re)connection, e.g. discovery.Discovery.announce
        client_id = client_id or f"edgeport-{socket.gethostname()}-{os.getpid()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if self.target.username is not None:
            self.client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            if ca_file is not None and not Path(ca_file).is_file():
                raise UsageError(f"--mqtt-ca {ca_file}: no such file; give the PEM CA certificate of the broker")
            self.client.tls_set(ca_certs=str(ca_file) if ca_file else None)  # None: the system's CAs
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.reconnect_delay_set(1, max(1, int(reconnect_max)))
        self.client.on_connect, self.client.on_disconnect, self.client.on_publish = self._on_connect, self._on_disconnect, self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self.client.connect_async(self.target.host, self.target.port, keepalive)
        self.client.loop_start()  # paho's thread: network I/O and reconnects
        self._thread = threading.Thread(target=self._publish_loop, name="edgeport-mqtt", daemon=True)
        self._thread.start()

    # paho callbacks (its network thread)
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._broker_down(f"the broker refused the connection ({reason})")
            return
        client.publish(self.status_topic, "online", qos=1, retain=True)
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        for hook in self.on_connected:
            hook()
        if self._down_reported:
            self._down_reported = False
            self._warn(f"MQTT broker {self.where} is back: sending the {self.pending} queued records")

    def _on_connect_fail(self, client, userdata) -> None:
        self._broker_down("it cannot be reached")

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()
        if not self._closing:
            self._broker_down(f"the connection was lost ({reason})")

    def _broker_down(self, why: str) -> None:
        """One warning per outage, not one per reconnect attempt."""
        if not self._down_reported:
            self._down_reported = True
            self._warn(f"warning: MQTT broker {self.where}: {why}; records are kept (up to {self.queue_max}) and sent "
                       "once it is back")

    @property
    def where(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    @property
    def connected(self) -> bool:
        return self._connected

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self._cond:
            if mid in self._inflight:
                self._inflight.discard(mid)
            elif self._publishing:
                self._early_acks.add(mid)
            self._cond.notify_all()

    def __call__(self, record: dict) -> None:
        """Queue one record for ``<prefix>/<source id>`` (records without one go to ``<prefix>/events``), a region's
        for ``<prefix>/<source id>/<region>``; a state record for ``…/state``, retained, so that a subscriber that
        comes later (Home Assistant after a restart) still reads the state in force."""
        topic = "/".join([self.target.prefix, record.get("source_id") or "events",
                          *([record["region"]] if record.get("region") else []),
                          *(["state"] if record.get("event") == "state" else [])])
        payload = json.dumps(record, ensure_ascii=True, allow_nan=False).encode()
        with self._cond:
            if len(self._queue) >= self.queue_max:
                self._queue.popleft()
                self.dropped += 1
                self._unreported += 1
            self._queue.append((topic, payload, record.get("event") == "state"))
            self._cond.notify_all()

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 message outside the records' queue (discovery, stats): sent now if connected, else not
        at all, since the next connection publishes the current one again."""
        if self._connected:
            self.client.publish(topic, payload, qos=1, retain=True)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _ready(self) -> bool:
        # After a reconnect paho resends what is in flight first; new messages wait for those acks (order).
        return self._closing or (self._connected and bool(self._queue) and len(self._inflight) < MAX_INFLIGHT
                                 and (not self._unreported or not self._inflight))

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._ready)
                if self._closing and (not self._connected or not self._queue):
                    return
                if self._unreported and not self._inflight:
                    topic, payload, retain = self.dropped_topic, json.dumps(
                        {"event": "records_dropped", "dropped": self._unreported, "total_dropped": self.dropped,
                         "queue_max": self.queue_max, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}).encode(), False
                    self._unreported = 0
                else:
                    topic, payload, retain = self._queue.popleft()
                self._publishing = True
            # Outside our lock: paho calls on_publish holding its own lock, so holding ours here could deadlock.
            info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
            with self._cond:
                self._publishing = False
                if self.qos and info.rc == 0:
                    if info.mid in self._early_acks:  # acknowledged before we got here
                        self._early_acks.discard(info.mid)
                    else:
                        self._inflight.add(info.mid)
                self.published += 1
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued record is acknowledged (or ``timeout`` seconds); True when done."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._inflight and not self._publishing, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (up to ``timeout`` seconds), then the retained ``offline`` status, and disconnect."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self.client.is_connected():
            self.client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        with self._cond:
            self.undelivered = self.dropped + len(self._queue) + len(self._inflight)
