"""``--health-port``: ``/healthz`` (200 while every source delivers, else 503; a JSON body per source) and
``/metrics`` in the Prometheus text format, written by ``prometheus-client`` (the ``[metrics]`` extra).

The metric families are built from a ``Stats`` snapshot at scrape time (a custom collector in a registry of our
own), so nothing global is registered and the service loop only updates plain counters.

The port must never cost the box its classification: each connection has a socket timeout (``SOCKET_TIMEOUT_S``)
and at most ``MAX_CONNECTIONS`` are served at once (the rest are closed at once, before a thread or a read), so a
client holding connections open (slowloris) cannot use up the process's file descriptors or threads; a client that
goes away mid-answer is not a traceback.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, TypeVar

from ..errors import MissingDependencyError, UsageError
from ..stream.stats import LATENCY_BUCKETS_S, Stats

__all__ = ["HealthServer", "BoundedServer", "ThreadedServer", "metrics_registry", "MAX_CONNECTIONS", "SOCKET_TIMEOUT_S"]

#: Connections served at once; a scraper and a load balancer's probe need a few.
MAX_CONNECTIONS = 16
#: Seconds a connection may take to send its request (and to take the answer).
SOCKET_TIMEOUT_S = 5.0


class BoundedServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a cap on live connections and no traceback per broken client."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)  # over the cap: closed before any thread or read
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up or timed out: nothing for the operator to act on


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependencyError("--health-port needs prometheus-client: pip install 'edgeport[metrics]'") from exc
    return prometheus_client


def metrics_registry(stats: Stats) -> Any:
    """A ``CollectorRegistry`` whose one collector reads ``stats`` at each scrape."""
    prometheus_client = _prometheus()
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    class StatsCollector:
        def collect(self) -> Iterator[Any]:
            with stats.lock:
                sources = {k: (s.frames, s.errors, s.drops, s.queue_depth, s.state, s.outages) for k, s in stats.sources.items()}
                buckets, count, total = list(stats.bucket_counts), stats.latency_count, stats.latency_sum_s
                capture_errors, delivery = stats.capture_errors, stats.delivery
            families = {
                "frames": CounterMetricFamily("edgeport_frames", "Frames classified (ok or not) per source", labels=["source"]),
                "errors": CounterMetricFamily("edgeport_frame_errors", "Frames that gave an error record", labels=["source"]),
                "drops": CounterMetricFamily("edgeport_frames_dropped", "Stale live frames dropped from a full queue",
                                             labels=["source"]),
                "outages": CounterMetricFamily("edgeport_source_outages", "Times a live source was lost", labels=["source"]),
                "depth": GaugeMetricFamily("edgeport_queue_depth", "Frames waiting in the source's queue", labels=["source"]),
                "up": GaugeMetricFamily("edgeport_source_up", "1 while the source delivers frames", labels=["source"]),
            }
            for source_id, (frames, errors, drops, depth, state, outages) in sources.items():
                for key, value in (("frames", frames), ("errors", errors), ("drops", drops), ("outages", outages),
                                   ("depth", depth), ("up", int(state == "up"))):
                    families[key].add_metric([source_id], value)
            yield from families.values()
            histogram = HistogramMetricFamily("edgeport_inference_latency_seconds",
                                              "Inference time per frame (its share of a batched call)")
            histogram.add_metric([], [(str(b), c) for b, c in zip(LATENCY_BUCKETS_S, buckets)] + [("+Inf", count)], total)
            yield histogram
            failed = CounterMetricFamily("edgeport_capture_errors", "Captures that could not be written (disk full, "
                                         "read-only); classification went on")
            failed.add_metric([], capture_errors)
            yield failed
            if delivery is not None:
                up = GaugeMetricFamily("edgeport_mqtt_connected", "1 while the MQTT broker is connected")
                up.add_metric([], int(delivery.connected))
                queued = GaugeMetricFamily("edgeport_mqtt_queued", "Records waiting for the broker")
                queued.add_metric([], delivery.pending)
                dropped = CounterMetricFamily("edgeport_mqtt_dropped", "Records dropped from the full queue while the "
                                              "broker was away")
                dropped.add_metric([], delivery.dropped)
                yield from (up, queued, dropped)
            info = GaugeMetricFamily("edgeport_model_info", "The model served (1)", labels=["sha256", "format"])
            info.add_metric([stats.model_sha256 or "", stats.model_format or ""], 1)
            yield info

    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector())
    return registry


_S = TypeVar("_S", bound="ThreadedServer")


class ThreadedServer:
    """A ``BoundedServer`` in a daemon thread: ``start()``, ``stop()``, ``port`` (the one bound, also for port 0).
    A port that cannot be bound is a usage error naming ``flag``."""

    def __init__(self, flag: str, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str):
        try:
            self.server = BoundedServer((host, port), handler)
        except OSError as exc:
            raise UsageError(f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror}); pick a free port") from exc
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def start(self: _S) -> _S:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HealthServer(ThreadedServer):
    """/healthz and /metrics; ``max_age_s``: how long a source may go without a frame."""

    def __init__(self, stats: Stats, port: int, host: str = "127.0.0.1", max_age_s: float = 30.0):
        prometheus_client = _prometheus()
        registry = metrics_registry(stats)

        class Handler(BaseHTTPRequestHandler):
            timeout = SOCKET_TIMEOUT_S  # the socket's timeout: a silent client is dropped, not waited for

            def log_message(self, *args: Any) -> None:  # no access log on the records' stderr
                pass

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def do_GET(self) -> None:
                self._answer(with_body=True)

            def _answer(self, with_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    healthy, report = stats.health(max_age_s)
                    data, status, kind = json.dumps(report).encode(), 200 if healthy else 503, "application/json"
                elif path == "/metrics":
                    data, status, kind = prometheus_client.generate_latest(registry), 200, prometheus_client.CONTENT_TYPE_LATEST
                else:
                    data, status, kind = b"try /healthz or /metrics\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

        super().__init__("--health-port", host, port, Handler, "edgeport-health")
