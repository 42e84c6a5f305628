"""--health-port against a real edge-predict process and a real MJPEG camera server that drops out and comes back:
/healthz 200 → 503 → 200 with a body per source, /metrics parsed as Prometheus text, one record per outage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .mjpeg_server import MjpegServer, free_port, solid_jpeg
from .test_service import COLOURS_BGR, colour_video
from .tiny_models import colour_bundle

BIN = Path(sys.executable).parent


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("health") / "bundle")


def test_health_and_metrics_follow_a_camera_that_drops_out_and_comes_back(bundle, tmp_path):
    camera = MjpegServer(free_port(), solid_jpeg(COLOURS_BGR["green"]), fps=10).start()
    video = colour_video(tmp_path / "v.avi", ["red"] * 5)
    port = free_port()
    proc = subprocess.Popen([BIN / "edge-predict", bundle, "--video", camera.url, "--name", f"gate={camera.url}",
                             "--video", video, "--health-port", str(port), "--health-max-age", "1.5", "--reconnect-max", "0.5",
                             "--output-format", "jsonl", "-k", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        status, body = wait_for(lambda: (r := _try(health)) and r[0] == 200 and json.loads(r[1])["sources"]["gate"]["frames"]
                                and json.loads(r[1])["sources"]["video2"]["frames"] == 5 and r, 30, "a healthy service")
        sources = json.loads(body)["sources"]
        assert sources["gate"]["state"] == "up" and sources["gate"]["frames"] > 0
        assert sources["video2"]["state"] in ("up", "ended")  # a finished file stays healthy
        _, metrics = get(f"http://127.0.0.1:{port}/metrics")
        families = {f.name: f for f in text_string_to_metric_families(metrics.decode())}
        frames = {s.labels["source"]: s.value for s in families["edgeport_frames"].samples if s.name.endswith("_total")}
        assert frames["gate"] >= 1 and frames["video2"] == 5
        assert {"edgeport_frames_dropped", "edgeport_queue_depth", "edgeport_inference_latency_seconds", "edgeport_model_info"} \
            <= set(families)
        latency = {s.name: s.value for s in families["edgeport_inference_latency_seconds"].samples if not s.labels.get("le")}
        assert latency["edgeport_inference_latency_seconds_count"] >= 6
        sha = families["edgeport_model_info"].samples[0].labels["sha256"]
        assert len(sha) == 64

        camera.stop()
        status, body = wait_for(lambda: (r := _try(health)) and r[0] == 503 and r, 30, "503 after the camera stopped")
        gate = json.loads(body)["sources"]["gate"]
        assert gate["healthy"] is False and gate["state"] == "lost" and gate["outages"] == 1
        time.sleep(2)  # several reconnect attempts fail meanwhile
        camera.start()
        wait_for(lambda: (r := _try(health)) and r[0] == 200, 30, "200 after the camera came back")
    finally:
        proc.send_signal(signal.SIGTERM)  # before the camera stops: that would be a second outage
        proc.wait(30)
        camera.stop()
    assert proc.returncode == 143, proc.stderr.read()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    events = [(r["source_id"], r["event"]) for r in records if "event" in r]
    assert events.count(("gate", "source_lost")) == 1 and events.count(("gate", "source_back")) == 1, events
    assert ("video2", "source_ended") in events


def _try(url: str):
    try:
        return get(url)
    except OSError:  # not listening yet
        return None
