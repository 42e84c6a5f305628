"""Soak (issue #18): two looped video sources through one model for a long time, records to a local MQTT broker,
captures on; RSS at 1k frames and at the end, open file descriptors and threads.

    nice -n 19 python -m benchmarks.soak BUNDLE [--minutes 30] [--frames 100000]
    python -m benchmarks.soak BUNDLE --minutes 5 --capture-tmpfs-mb 1 --broker-down-at 3000 --broker-down-s 10   # root

``--capture-tmpfs-mb N`` captures into a tmpfs of N MB filled to its last 64 KB (mount needs root): capture must
report its failures and pause, never stop the run. ``--broker-down-at F`` stops the broker at frame F and starts it
again on the same port ``--broker-down-s`` seconds later: every record that never reached it must be counted.

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


def start_broker(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if port is None:
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


def fill_tmpfs(folder: Path, size_mb: float, leave_kb: int = 64) -> None:
    """A tmpfs of ``size_mb`` at ``folder``, filled until ``leave_kb`` are free (a nearly full disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_mb * 1024)}k", "tmpfs", str(folder)], check=True)
    free = shutil.disk_usage(folder).free - leave_kb * 1024
    (folder / "filler").write_bytes(b"\0" * max(0, free))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--capture-tmpfs-mb", type=float, default=None)
    parser.add_argument("--broker-down-at", type=int, default=None)
    parser.add_argument("--broker-down-s", type=float, default=10.0)
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
        warnings: list[str] = []
        sink = MqttSink(f"mqtt://127.0.0.1:{port}/soak", qos=1, warn=warnings.append)
        stats = Stats()
        if args.capture_tmpfs_mb:
            fill_tmpfs(tmp / "capture", args.capture_tmpfs_mb)
        # 2 classes: top-1 is never below 0.5, so "unsure" is below 0.9 here; a 2 MB quota so deletion runs too.
        capture = Capture(tmp / "capture", below=0.9, rate=6, max_mb=2, on_error=warnings.append)
        restart_at = None
        sources = [frames_source("a", looped(video), live=False), frames_source("b", looped(video), live=False)]
        at_1k, frames, t0 = None, 0, time.monotonic()
        deadline = t0 + args.minutes * 60
        for item in Stream(clf, sources, sinks=[sink], top_k=3, batch="auto", stats=stats, capture=capture):
            if isinstance(item, SourceEvent):
                continue
            frames += 1
            if frames == args.broker_down_at:
                broker.terminate()
                broker.wait(10)
                restart_at = time.monotonic() + args.broker_down_s
                print(json.dumps({"broker": "stopped", "frames": frames}), flush=True)
            if restart_at is not None and time.monotonic() >= restart_at:
                broker, _ = start_broker(tmp, port)
                restart_at = None
                print(json.dumps({"broker": "started again", "frames": frames}), flush=True)
            if frames == 1000:
                at_1k = process_figures()
                print(json.dumps({"at_1k_frames": at_1k}), flush=True)
            if frames % 10_000 == 0:
                print(json.dumps({"frames": frames, "minutes": round((time.monotonic() - t0) / 60, 1), **process_figures()}),
                      flush=True)
            if frames >= args.frames or time.monotonic() > deadline:
                break
        sink.flush(30)
        sink.close()
        end = process_figures()
        report = {"minutes": round((time.monotonic() - t0) / 60, 1), "frames": frames, "at_1k_frames": at_1k, "end": end,
                  "rss_growth_mb": round(end["rss_mb"] - at_1k["rss_mb"], 1) if at_1k else None,
                  "mqtt_published": sink.published, "mqtt_received": received[0], "mqtt_dropped": sink.dropped,
                  "mqtt_undelivered": sink.undelivered, "captured": capture.saved, "capture_deleted": capture.deleted,
                  "capture_failed": capture.failed, "warnings": warnings[:6],
                  "capture_mb": round(sum(f.stat().st_size for f in (tmp / "capture").rglob("*") if f.is_file()) / 2**20, 2),
                  "python_threads": threading.active_count()}
        print(json.dumps(report), flush=True)
    finally:
        sub.loop_stop()
        broker.terminate()
        broker.wait(10)
        if args.capture_tmpfs_mb:
            subprocess.run(["umount", str(tmp / "capture")], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
