"""edge-predict's service mode: several sources, MQTT, health and captures in one process.

Kept apart from ``cli.py`` so the one-source path stays as it was; ``cli.py`` hands over here when the
options ask for a service (several sources, ``--name``, ``--reconnect`` …).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import click

from ..cli_support import exit_on_error
from ..errors import EdgeportError, ExitCode
from ..manifest import sha256_file
from ..records import Summary, csv_header, format_record, to_record
from ..reload import identity
from ..shutdown import SigtermStop, Terminated
from .run import MultiStream
from .sources import Backoff, Source, camera_source, file_source, parse_names, video_source, watch_source
from .stats import Stats

__all__ = ["ServiceOptions", "run_service", "build_sources"]


@dataclass
class ServiceOptions:
    names: tuple[str, ...] = ()
    reconnect: bool = False
    reconnect_max: float = 30.0
    mqtt_url: str | None = None
    mqtt_qos: int = 1
    mqtt_ca: str | None = None
    mqtt_queue: int = 10_000
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    health_max_age: float = 30.0
    capture_dir: str | None = None
    capture_below: float | None = 0.5
    capture_margin: float | None = None
    capture_rate: float = 6.0
    capture_max_mb: float = 500.0

    def wanted(self, inputs, video, camera, watch) -> bool:
        count = (1 if inputs else 0) + len(video) + len(camera) + len(watch)
        return count > 1 or bool(self.names) or self.reconnect or any(
            x is not None for x in (self.mqtt_url, self.health_port, self.capture_dir))


def build_sources(inputs, video, camera, watch, names, *, every, max_fps, watch_timeout, max_files, started,
                  backoff: Backoff) -> list[Source]:
    given = ([("files", ",".join(inputs))] if inputs else []) + [("camera", str(c)) for c in camera] + \
            [("video", v) for v in video] + [("watch", w) for w in watch]
    if not given:
        raise click.UsageError("give INPUTS, --video, --camera or --watch (each of the last three may be repeated)")
    ids = parse_names(names, given)
    sources = []
    for kind, target in given:
        source_id = ids[(kind, target)]
        if kind == "files":
            sources.append(file_source(source_id, inputs, max_fps))
        elif kind == "camera":
            sources.append(camera_source(source_id, int(target), every, max_fps, backoff))
        elif kind == "video":
            sources.append(video_source(source_id, target, every, max_fps, backoff))
        else:
            sources.append(watch_source(source_id, target, since=started, idle_timeout=watch_timeout, max_files=max_files,
                                        max_fps=max_fps))
    return sources


def _event_text(record: dict) -> str:
    detail = record.get("error") or (f"after {record['down_s']} s" if "down_s" in record else "")
    return f"[{record['source_id']}] {record['event']}: {record['source']}" + (f" ({detail})" if detail else "")


def run_service(model, inputs, video, camera, watch, options: ServiceOptions, *, every, max_fps, watch_timeout, max_files,
                top_k, threshold, fmt, started, debug, batch, hot_reload, reload_interval, classifier: dict[str, Any],
                sinks: tuple[Callable[[dict], None], ...] = ()) -> None:
    """Run the service until every source ended, Ctrl-C or SIGTERM; print the summary; exit with its code."""
    from ..classifier import Classifier

    with exit_on_error(debug):
        sources = build_sources(inputs, video, camera, watch, options.names, every=every, max_fps=max_fps,
                                watch_timeout=watch_timeout, max_files=max_files, started=started,
                                backoff=Backoff(min(0.5, options.reconnect_max), options.reconnect_max))
        clf = Classifier(model, batch_size=max(8, len(sources)) if batch == "auto" else batch, **classifier)
        sinks = list(sinks)
        mqtt = None
        if options.mqtt_url:
            from .mqtt import MqttSink

            mqtt = MqttSink(options.mqtt_url, qos=options.mqtt_qos, ca_file=options.mqtt_ca, queue_max=options.mqtt_queue,
                            reconnect_max=options.reconnect_max)
            sinks.append(mqtt)
        stats = Stats(model_sha256=identity(clf)["sha256"] or sha256_file(clf.model_path), model_format=clf.format)
        capture = None
        if options.capture_dir is not None:
            from .capture import Capture

            capture = Capture(options.capture_dir, options.capture_below, options.capture_margin, options.capture_rate,
                              options.capture_max_mb, stats.model_sha256)
        health = None
        if options.health_port is not None:
            from .health import HealthServer

            health = HealthServer(stats, options.health_port, options.health_host, options.health_max_age).start()
    lock = threading.Lock()

    def echo(text: str, err: bool = False) -> None:
        with lock:
            click.echo(text, err=err)

    if hot_reload:
        with exit_on_error(debug):
            clf.auto_reload(lambda record: echo(json.dumps(record, ensure_ascii=False), err=fmt != "jsonl"), reload_interval)
    if fmt == "csv":
        click.echo(csv_header(with_ids=True))
    summary, stopped = Summary(started=time.perf_counter()), None
    stream = MultiStream(clf, sources, batch, stats, capture).start()
    with SigtermStop() as sigterm:
        try:
            for items in sigterm.frames(stream.batches()):
                for item in stream.classify(items, top_k, threshold):
                    if hasattr(item, "event"):
                        record = item.record()
                        if fmt == "jsonl":
                            echo(json.dumps(record, ensure_ascii=True))
                        else:
                            echo(_event_text(record), err=True)
                    else:
                        summary.add(item)
                        record = to_record(item)
                        echo(format_record(record, fmt))
                    for sink in sinks:
                        sink(record)
        except KeyboardInterrupt:
            stopped = "interrupted"
        except Terminated:
            pass
        finally:
            stream.stop()
            clf.stop_reload()
            if mqtt is not None:
                mqtt.close()
            if health is not None:
                health.stop()
        if sigterm.requested:
            stopped = "terminated"
    name = clf.format or clf.model_path.name
    click.echo(f"{summary.text(time.perf_counter(), stopped=stopped)} ({len(sources)} sources, {name} on {clf.backend})", err=True)
    if stream.failures and not stopped:
        failure = stream.failures[0]
        if isinstance(failure, EdgeportError):
            with exit_on_error(debug):
                raise failure
    codes = {"interrupted": ExitCode.INTERRUPTED, "terminated": ExitCode.TERMINATED}
    sys.exit(codes[stopped] if stopped else ExitCode.SOME_INPUTS_FAILED if summary.failed else ExitCode.OK)
