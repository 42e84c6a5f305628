"""Issue #33's findings, each as a regression test: real edge-predict processes, real mounts (a full tmpfs, a
read-only bind mount), real sockets and a real camera-like HTTP stream where the finding is about them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgeport.runtime import Classifier
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import ExitCode
from edgeport.runtime.frames import Frame
from edgeport.runtime.records import StreamResult
from edgeport.runtime.reload import reload_now
from edgeport.runtime.service.capture import Capture
from edgeport.runtime.service.health import MAX_CONNECTIONS, SOCKET_TIMEOUT_S
from edgeport.runtime.stream import Stream, frames_source
from PIL import Image

from .mjpeg_server import MjpegServer, free_port, solid_jpeg
from .test_health import get, wait_for
from .test_service import colour_video
from .tiny_models import COLOURS, colour_bundle

#: Real processes that wait out socket timeouts and capture pauses: the full suite, not the fast loop.
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
GREY = (132, 145, 153)  # BGR: the colour model is unsure about it (every frame is a capture)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("hardening") / "bundle")


def grey_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 72))
    for _ in range(frames):
        writer.write(np.full((72, 96, 3), GREY, np.uint8))
    writer.release()
    return path


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# 1. A symlinked or relative bundle path, without a verify key -------------------------------------------------------

def test_a_relative_symlinked_bundle_serves_several_sources_and_the_health_port(bundle, tmp_path):
    """Exited 1 ('Internal error: ValueError') at start: the served bundle's facts compared a resolved path with an
    unresolved one. The documented /srv/model/current layout is this case."""
    (tmp_path / "rel").mkdir()
    shutil.copytree(bundle, tmp_path / "rel" / "v1")
    (tmp_path / "cur").symlink_to("rel/v1")
    colour_video(tmp_path / "a.avi", ["red", "green"] * 3)
    run = subprocess.run([BIN / "edge-predict", "cur", "--video", "a.avi", "--name", "a=a.avi", "--output-format", "jsonl"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [r["label"] for r in _jsonl(run.stdout) if "frame" in r] == ["red", "green"] * 3
    (tmp_path / "w1").mkdir()
    port = free_port()
    watched = subprocess.Popen([BIN / "edge-predict", "cur", "--watch", "w1", "--health-port", str(port), "--max-files",
                                "1", "--output-format", "jsonl"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: watched.poll() is not None or _answers(port), 60, "the health port")
    Image.new("RGB", (40, 30), (250, 5, 5)).save(tmp_path / "w1" / "x.png")
    out, err = watched.communicate(timeout=120)
    assert watched.returncode == 0, err
    assert [r["label"] for r in _jsonl(out) if r.get("ok") and "label" in r] == ["red"]


def _answers(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/healthz")[0] in (200, 503)
    except OSError:
        return False


def test_reload_through_a_relative_symlink_swaps_to_the_new_folder(imagenet_bundle, tmp_path, monkeypatch):
    for name in ("v1", "v2"):
        shutil.copytree(imagenet_bundle, tmp_path / name)
    (tmp_path / "current").symlink_to("v1")
    monkeypatch.chdir(tmp_path)
    clf = Classifier("current")
    assert clf.bundle_facts()["bundle"] == str(tmp_path / "v1") and clf.bundle_facts()["sha256"]
    (tmp_path / "next").symlink_to("v2")
    os.replace(tmp_path / "next", tmp_path / "current")  # the atomic switch of docs/fleet-updates.md
    record = reload_now(clf)
    assert record["old"]["bundle"] == str(tmp_path / "v1") and record["new"]["bundle"] == str(tmp_path / "v2")
    assert record["new"]["sha256"] == record["old"]["sha256"]  # the same model, now served from v2


# 2. --capture on a full or read-only file system -------------------------------------------------------------------

def _mount(args: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind mount needs root (CI runs as root)")
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.mark.parametrize("kind", ["full tmpfs", "read-only mount"])
def test_capture_that_cannot_write_is_reported_and_classification_goes_on(bundle, tmp_path, kind):
    target = tmp_path / "cap"
    target.mkdir()
    if kind == "full tmpfs":
        _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)])
    else:
        (target / "cam").mkdir()
        _mount(["--bind", str(target), str(target)])
    try:
        if kind == "full tmpfs":
            (target / "cam").mkdir()
            fd = os.open(target / "filler", os.O_WRONLY | os.O_CREAT)
            try:  # fill it to the last byte
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
        else:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)
        video = grey_video(tmp_path / "grey.avi", 20)
        run = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--name", f"cam={video}",
                              "--capture", target, "--capture-below", "0.99", "--capture-rate", "1000",
                              "--output-format", "jsonl"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        frames = [r for r in _jsonl(run.stdout) if "frame" in r]
        assert len(frames) == 20 and all(r["ok"] for r in frames)  # every frame classified
        assert run.stderr.count("warning: capture to") == 1, run.stderr  # reported once, then paused
        assert "Traceback" not in run.stderr
        assert not list((target / "cam").glob("*.json")), "no orphan sidecar"
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


# 3. The capture quota deletes only what capture wrote ----------------------------------------------------------------

def test_the_quota_never_deletes_a_datasets_photos_behind_a_symlink(bundle, tmp_path):
    dataset = tmp_path / "train" / "cam"
    dataset.mkdir(parents=True)
    photos = []
    for i in range(16):
        photo = dataset / f"photo_{i:02d}.jpg"
        Image.new("RGB", (120, 90), (i * 10, 50, 90)).save(photo, quality=95)
        photos.append(photo)
    lookalike = dataset / "20260101T000000.000000Z_3.jpg"  # capture's name pattern, but not capture's (no sidecar)
    Image.new("RGB", (120, 90), (9, 9, 9)).save(lookalike)
    (tmp_path / "capl").symlink_to(tmp_path / "train")
    clf = Classifier(bundle, threads=1)
    capture = Capture(tmp_path / "capl", below=0.99, rate=1000, max_mb=0.005)
    assert capture.saved == 0 and not capture._files  # nothing there is capture's
    frames = [Frame("cam", np.full((64, 64, 3), GREY, np.uint8), color="bgr", index=i) for i in range(12)]
    list(Stream(clf, [frames_source("cam", frames)], capture=capture))
    assert capture.saved == 12 and capture.deleted > 0  # the quota ran …
    assert all(p.exists() for p in photos) and lookalike.exists()  # … on capture's own pairs only


# 4. Frames queued before a swap are prepared again with the new model's contract -------------------------------------

class _SwapAfterFirstBatch:
    """Stands in for a HotReloader's timing (its checks are tested in test_reload.py): a real swap_to, after batch 1."""

    def __init__(self, clf: Classifier, new: Classifier):
        self.clf, self.new, self.calls = clf, new, 0

    def take(self):
        self.calls += 1
        if self.calls != 2:
            return None
        old = self.clf.bundle_facts()
        self.clf.swap_to(self.new)
        return {"old": old, "new": self.clf.bundle_facts()}


def test_a_swap_between_two_frames_never_classifies_with_the_old_contract(tmp_path):
    contract = json.loads(PreprocessContract(labels=COLOURS).to_json())
    other = {**contract, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # EfficientNet-Lite0 style
    old_clf = Classifier(colour_bundle(tmp_path / "old"), threads=1)
    new_clf = Classifier(colour_bundle(tmp_path / "new", contract=other), threads=1)
    images = [np.full((48, 48, 3), (30 + 20 * i, 120, 200 - 15 * i), np.uint8) for i in range(8)]
    assert not np.allclose(old_clf.scores(images, color="bgr"), new_clf.scores(images, color="bgr"), atol=1e-3)
    served = Classifier(tmp_path / "old", threads=1)
    frames = [Frame("cam", image, color="bgr", index=i) for i, image in enumerate(images)]
    source = frames_source("cam", frames)
    stream = Stream(served, [source], batch=1, top_k=3, reloader=_SwapAfterFirstBatch(served, new_clf)).start()
    time.sleep(0.3)  # the reader thread prepares the next frames with the old contract meanwhile
    results = [r for r in stream if isinstance(r, StreamResult)]
    assert len(results) == 8
    expected = [old_clf.predict(images[0], top_k=3, color="bgr")] + [new_clf.predict(im, top_k=3, color="bgr")
                                                                     for im in images[1:]]
    for result, prediction in zip(results, expected):
        assert [label for label, _ in result.top] == [label for label, _ in prediction.top]
        assert np.allclose([s for _, s in result.top], [s for _, s in prediction.top], atol=1e-6)


# 5. The health port under idle connections (slowloris) --------------------------------------------------------------

def test_idle_connections_to_the_health_port_cost_neither_classification_nor_tracebacks(bundle, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    proc = subprocess.Popen(["prlimit", "--nofile=256:256", "--", BIN / "edge-predict", "serve", bundle, "--watch", inbox,
                             "--health-port", str(port), "--output-format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: _answers(port), 60, "the health port")
        for _ in range(400):  # more than the process's file descriptors
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            idle.append(s)
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert fds < 100, f"{fds} descriptors open: idle clients must not hold one each"
        for i in range(3):  # file I/O and inference go on meanwhile
            Image.new("RGB", (40, 30), (250, 5, 5)).save(inbox / f"{i}.png")
        time.sleep(SOCKET_TIMEOUT_S + 2)
        status, _ = get(f"http://127.0.0.1:{port}/healthz")  # the idle ones timed out: the port answers again
        assert status in (200, 503)
        head = subprocess.run(["python3", "-c", f"import http.client as h; c=h.HTTPConnection('127.0.0.1',{port});"
                               "c.request('HEAD','/healthz'); r=c.getresponse(); print(r.status, len(r.read()))"],
                              capture_output=True, text=True, timeout=30)
        assert head.stdout.split()[1] == "0" and head.stdout.split()[0] in ("200", "503"), head.stdout + head.stderr
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.TERMINATED, err
    frames = [r for r in _jsonl(out) if "event" not in r]  # serve also writes the stream's state records (stream.states)
    assert len([r for r in frames if r.get("label") == "red"]) == 3
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert MAX_CONNECTIONS < 100


# 6. Credentials never reach a record, a log line or a sidecar --------------------------------------------------------

def test_a_camera_urls_password_is_in_no_record_sidecar_or_log(bundle, tmp_path):
    server = MjpegServer(free_port(), solid_jpeg(GREY)).start()
    url = server.url.replace("http://", "http://admin:campass@")
    try:
        run = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", url, "--name", f"cam={url}",
                              "--capture", tmp_path / "cap", "--capture-below", "0.99", "--max-fps", "10",
                              "--output-format", "jsonl"], capture_output=True, text=True, timeout=15,
                             preexec_fn=lambda: signal.alarm(4))  # SIGALRM ends the run after a few frames
    finally:
        server.stop()
    frames = [r for r in _jsonl(run.stdout) if "frame" in r]
    assert frames and all(r["source"] == server.url.replace("http://", "http://***@") for r in frames)
    sidecars = [p.read_text() for p in (tmp_path / "cap").rglob("*.json")]
    assert sidecars, "a grey frame is always captured"
    for text in [run.stdout, run.stderr, *sidecars]:
        assert "campass" not in text and "admin" not in text


def test_a_brokers_password_is_not_echoed_in_a_usage_error(bundle, tmp_path):
    video = colour_video(tmp_path / "a.avi", ["red"])
    run = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--mqtt", "mqtp://u:s3cret@host/x"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == ExitCode.USAGE and "s3cret" not in run.stderr + run.stdout and "***" in run.stderr


# 7. An empty verify key never turns verification off -----------------------------------------------------------------

def test_an_empty_verify_key_variable_is_an_error(bundle, tmp_path):
    photo = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (250, 5, 5)).save(photo)
    run = subprocess.run([BIN / "edge-predict", bundle, photo], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "EDGEPORT_VERIFY_KEY": ""})
    assert run.returncode == ExitCode.USAGE and "empty" in run.stderr, run.stderr
    assert not run.stdout


# 10. Smaller findings ----------------------------------------------------------------------------------------------

def test_a_manifest_with_a_key_twice_is_refused(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    text = (copy / "manifest.json").read_text()
    sha = json.loads(text)["files"]["model.onnx"]["sha256"]
    twice = text.replace(f'"sha256": "{sha}"', f'"sha256": "{"0" * 64}", "sha256": "{sha}"', 1)
    (copy / "manifest.json").write_text(twice)
    run = subprocess.run([BIN / "edge-predict", copy, "x.jpg"], capture_output=True, text=True, timeout=60)
    assert run.returncode == ExitCode.USAGE and "twice" in run.stderr, run.stderr


def test_a_listed_file_that_links_out_of_the_bundle_is_refused_without_a_key(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "labels.txt").unlink()
    (copy / "labels.txt").symlink_to("/etc/passwd")
    run = subprocess.run([BIN / "edge-predict", copy, "x.jpg"], capture_output=True, text=True, timeout=60)
    assert run.returncode == ExitCode.USAGE and "labels.txt resolves outside the bundle" in run.stderr, run.stderr


def test_one_source_twice_or_named_twice_is_a_usage_error(bundle, tmp_path):
    video = str(colour_video(tmp_path / "a.avi", ["red"]))
    for args in (["--video", video, "--video", video], ["--video", video, "--name", f"a={video}", "--name", f"b={video}"]):
        run = subprocess.run([BIN / "edge-predict", "serve", bundle, *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == ExitCode.USAGE, run.stderr
        assert "twice" in run.stderr or "two names" in run.stderr, run.stderr


# 8. MQTT delivery failures are visible -------------------------------------------------------------------------------

def test_a_broker_away_for_the_whole_run_is_warned_counted_and_exits_8(bundle, tmp_path):
    video = colour_video(tmp_path / "a.avi", ["red", "green"])
    closed = free_port()  # nothing listens there
    run = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--mqtt",
                          f"mqtt://127.0.0.1:{closed}/box", "--output-format", "jsonl"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == ExitCode.RECORDS_UNDELIVERED, run.stderr
    assert "warning: MQTT broker 127.0.0.1" in run.stderr
    assert "records never reached the MQTT broker" in run.stderr
    assert len([r for r in _jsonl(run.stdout) if "frame" in r]) == 2  # classified all the same


def test_a_dollar_topic_is_refused(bundle, tmp_path):
    video = colour_video(tmp_path / "a.avi", ["red"])
    run = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--mqtt", "mqtt://127.0.0.1/$SYS/x"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == ExitCode.USAGE and "$SYS" in run.stderr
