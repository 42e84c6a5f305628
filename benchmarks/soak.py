"""Soak (issue #18): two looped video sources through one model for a long time, records to a local MQTT broker,
captures on; RSS at 1k frames and at the end, open file descriptors and threads.

    nice -n 19 python -m benchmarks.soak BUNDLE [--minutes 30] [--frames 100000]

Starts its own Mosquitto (``mosquitto`` on PATH or in /usr/sbin) on 127.0.0.1 with a temporary config, and a
subscriber that counts what arrives. The video is made from the hymenoptera val photos (MJPG, 320×240) and each
source reopens it when it ends. Goal: RSS growth ≤ 5 MB from 1k frames to the end, no fd or thread growth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import cv2
from edgeport.runtime import Classifier
from edgeport.runtime.frames import video_frames
from edgeport.runtime.service.capture import Capture
from edgeport.runtime.service.mqtt import MqttSink
from edgeport.runtime.stream import SourceEvent, Stats, Stream, frames_source

from .common import hymenoptera_dir


def process_figures() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1), "fds": len(os.listdir("/proc/self/fd")),
            "threads": int(status["Threads"])}


def looped(path: Path):
    while True:
        yield from video_frames(path)


def make_video(out: Path) -> Path:
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for photo in sorted((hymenoptera_dir() / "val").glob("*/*.jpg")):
        writer.write(cv2.resize(cv2.imread(str(photo)), (320, 240)))
    writer.release()
    return out


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([binary, "-c", str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import paho.mqtt.client as mqtt

    tmp = Path(tempfile.mkdtemp(prefix="edgeport-soak-"))
    broker, port = start_broker(tmp)
    received = [0]
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-subscriber")
    sub.on_connect = lambda c, *a: c.subscribe("soak/#", qos=1)
    sub.on_message = lambda *a: received.__setitem__(0, received[0] + 1)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        video = make_video(tmp / "loop.avi")
        clf = Classifier(args.bundle, threads=args.threads)
        sink = MqttSink(f"mqtt://127.0.0.1:{port}/soak", qos=1)
        stats = Stats()
        # 2 classes: top-1 is never below 0.5, so "unsure" is below 0.9 here; a 2 MB quota so deletion runs too.
        capture = Capture(tmp / "capture", below=0.9, rate=6, max_mb=2)
        sources = [frames_source("a", looped(video), live=False), frames_source("b", looped(video), live=False)]
        at_1k, frames, t0 = None, 0, time.monotonic()
        deadline = t0 + args.minutes * 60
        for item in Stream(clf, sources, sinks=[sink], top_k=3, batch="auto", stats=stats, capture=capture):
            if isinstance(item, SourceEvent):
                continue
            frames += 1
            if frames == 1000:
                at_1k = process_figures()
                print(json.dumps({"at_1k_frames": at_1k}), flush=True)
            if frames % 10_000 == 0:
                print(json.dumps({"frames": frames, "minutes": round((time.monotonic() - t0) / 60, 1), **process_figures()}),
                      flush=True)
            if frames >= args.frames or time.monotonic() > deadline:
                break
        sink.flush(30)
        end = process_figures()
        report = {"minutes": round((time.monotonic() - t0) / 60, 1), "frames": frames, "at_1k_frames": at_1k, "end": end,
                  "rss_growth_mb": round(end["rss_mb"] - at_1k["rss_mb"], 1) if at_1k else None,
                  "mqtt_published": sink.published, "mqtt_received": received[0], "mqtt_dropped": sink.dropped,
                  "captured": capture.saved, "capture_deleted": capture.deleted,
                  "capture_mb": round(sum(f.stat().st_size for f in (tmp / "capture").rglob("*") if f.is_file()) / 2**20, 2),
                  "python_threads": threading.active_count()}
        print(json.dumps(report), flush=True)
        sink.close()
    finally:
        sub.loop_stop()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
