"""The camera box as a service: several sources in one process and one model, ids in every record, no file frame
lost, batching across sources, and reconnects against a real HTTP MJPEG server that stops and restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgeport.runtime import Classifier
from edgeport.runtime.errors import UsageError
from edgeport.runtime.frames import Frame
from edgeport.runtime.stream import Backoff, SourceEvent, Stream, classify_stream, frames_source, parse_names, url_source

from .mjpeg_server import MjpegServer, free_port, solid_jpeg
from .tiny_models import colour_bundle

BIN = Path(sys.executable).parent
COLOURS_BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("service") / "bundle")


def colour_video(path: Path, colours: list[str]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for name in colours:
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:] = COLOURS_BGR[name]
        writer.write(frame)
    writer.release()
    return path


def test_several_video_files_in_one_process_keep_every_frame_in_order_with_their_ids(bundle, tmp_path):
    a = colour_video(tmp_path / "a.avi", ["red", "green", "blue"] * 10)
    b = colour_video(tmp_path / "b.avi", ["blue"] * 25)
    proc = subprocess.run([BIN / "edge-predict", bundle, "--video", a, "--video", b, "--name", f"door={b}", "--batch", "auto",
                           "--output-format", "jsonl", "-k", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    frames = [r for r in records if "event" not in r]
    by_id = {sid: [r for r in frames if r["source_id"] == sid] for sid in ("video1", "door")}
    assert [r["frame"] for r in by_id["video1"]] == list(range(30))  # a file source never drops a frame
    assert [r["frame"] for r in by_id["door"]] == list(range(25))
    assert [r["label"] for r in by_id["video1"]] == ["red", "green", "blue"] * 10
    assert {r["label"] for r in by_id["door"]} == {"blue"}
    ended = [r["source_id"] for r in records if r.get("event") == "source_ended"]
    assert sorted(ended) == ["door", "video1"]
    assert "55 classified, 0 failed" in proc.stderr and "2 sources" in proc.stderr


def test_python_api_streams_several_sources_into_plain_callables(bundle):
    clf = Classifier(bundle, threads=1)

    def pictures(colour: str, n: int):
        for i in range(n):
            image = np.zeros((64, 64, 3), np.uint8)
            image[:] = COLOURS_BGR[colour]
            yield Frame(f"{colour}-cam", image, color="bgr", index=i)

    sink: list[dict] = []
    results = list(Stream(clf, [frames_source("left", pictures("red", 12)), frames_source("right", pictures("green", 7))],
                          top_k=1, batch="auto", sinks=[sink.append]))
    frames = [r for r in results if not isinstance(r, SourceEvent)]
    assert len(frames) == 19 and len(sink) == len(results)
    assert [r.index for r in frames if r.source_id == "left"] == list(range(12))
    assert {r.label for r in frames if r.source_id == "left"} == {"red"}
    assert {r.label for r in frames if r.source_id == "right"} == {"green"}
    assert all(rec["source_id"] in ("left", "right") for rec in sink)


def test_batch_auto_classifies_frames_of_several_sources_in_one_call(bundle):
    """With the sources' queues full, one inference call takes a frame from each."""
    clf = Classifier(bundle, threads=1)
    calls: list[int] = []
    real = clf.classify_prepared
    clf.classify_prepared = lambda items, *a: (calls.append(len(items)), real(items, *a))[1]  # observe, not replace
    frames = {f"s{i}": [Frame(f"s{i}", np.full((32, 32, 3), 200, np.uint8), color="bgr", index=j) for j in range(20)]
              for i in range(4)}
    stream = Stream(clf, [frames_source(k, v) for k, v in frames.items()], batch="auto").start()
    time.sleep(0.5)  # every reader thread fills its queue (2 frames each) before the first take
    results = [r for items in stream.batches() for r in stream.classify(items) if not isinstance(r, SourceEvent)]
    assert len(results) == 80 and max(calls) == 4 and sum(calls) == 80


def test_names_are_checked():
    given = [("camera", "0"), ("video", "rtsp://x/1"), ("camera", "1")]
    assert parse_names(["yard=rtsp://x/1"], given) == {("camera", "0"): "camera1", ("video", "rtsp://x/1"): "yard",
                                                      ("camera", "1"): "camera2"}
    for bad in (["yard"], ["yard=nope"], ["a/b=0"], ["status=0"], ["camera2=0"]):
        with pytest.raises(UsageError):
            parse_names(bad, given)


def test_a_stream_that_drops_out_reconnects_with_one_record_per_outage_while_another_source_keeps_running(bundle, tmp_path):
    port = free_port()
    server = MjpegServer(port, solid_jpeg(COLOURS_BGR["red"])).start()
    clf = Classifier(bundle, threads=1)

    def slow_file_frames():  # a second source that keeps delivering through the outage
        for i in range(10_000):
            time.sleep(0.05)
            yield Frame("paced", np.full((32, 32, 3), (255, 0, 0), np.uint8), color="bgr", index=i)

    sources = [url_source("cam", server.url, backoff=Backoff(0.1, 0.4)), frames_source("other", slow_file_frames())]
    events, counts, phase = [], {"cam": [0, 0, 0], "other": [0, 0, 0]}, 0
    t_stop = None
    for item in Stream(clf, sources, top_k=1):
        if isinstance(item, SourceEvent):
            events.append(item)
            if item.event == "source_lost" and item.source_id == "cam":
                phase = 1
            if item.event == "source_back":
                phase = 2
            continue
        counts[item.source_id][phase] += 1
        if item.source_id == "cam":
            assert item.label == "red"
        if phase == 0 and counts["cam"][0] >= 10 and t_stop is None:
            server.stop()
            t_stop = time.monotonic()
        if phase == 1 and time.monotonic() - t_stop > 2.0 and server._server is None:
            server.start()  # several failed attempts (0.1, 0.2, 0.4, 0.4 … s) lie behind us: still one record
        if phase == 2 and counts["cam"][2] >= 5:
            break
    server.stop()
    cam_events = [e.event for e in events if e.source_id == "cam"]
    assert cam_events == ["source_lost", "source_back"], cam_events
    lost, back = (e for e in events if e.source_id == "cam")
    assert "retrying" in lost.error and back.down_s >= 2.0
    assert counts["other"][1] >= 10  # the other source kept running during the outage
    assert counts["cam"][1] == 0


def test_a_missing_video_file_is_a_usage_error_at_start(bundle, tmp_path):
    proc = subprocess.run([BIN / "edge-predict", bundle, "--video", tmp_path / "nope.avi", "--video", tmp_path / "nope2.avi"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such video file" in proc.stderr


def test_csv_and_table_carry_the_source_id_and_bad_options_exit_2(bundle, tmp_path):
    a = colour_video(tmp_path / "a.avi", ["red"] * 3)
    b = colour_video(tmp_path / "b.avi", ["green"] * 2)
    proc = subprocess.run([BIN / "edge-predict", bundle, "--video", a, "--video", b, "--output-format", "csv", "-k", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert sorted((r["source_id"], r["label"]) for r in rows) == [("video1", "red")] * 3 + [("video2", "green")] * 2
    assert "[video2] source_ended" in proc.stderr  # events go to stderr in csv/table mode
    table = subprocess.run([BIN / "edge-predict", bundle, "--video", a, "--video", b, "-k", "1"], capture_output=True, text=True,
                           timeout=120)
    assert table.returncode == 0 and table.stdout.count("[video1] ") == 3
    for bad in (["--name", "x=elsewhere.avi"], ["--batch", "0"], ["--name", "status=" + str(a)]):
        proc = subprocess.run([BIN / "edge-predict", bundle, "--video", a, "--video", b, *bad], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, (bad, proc.stderr)


def test_a_watched_folder_that_disappears_fails_its_source_and_the_run_exits_2_after_the_others(bundle, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    video = colour_video(tmp_path / "a.avi", ["red"] * 20)
    proc = subprocess.Popen([BIN / "edge-predict", bundle, "--watch", folder, "--video", video, "--max-fps", "10",
                             "--output-format", "jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    folder.rmdir()
    out, err = proc.communicate(timeout=60)
    records = [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 2, err
    assert any(r.get("event") == "source_failed" and r["source_id"] == "watch1" for r in records)
    assert len([r for r in records if r.get("source_id") == "video1" and "event" not in r]) == 20  # the other source finished


def test_a_live_source_keeps_only_its_newest_frame_and_a_file_source_waits_for_room(bundle):
    """The stale-frame rule, through the real reader threads: a live source that outruns inference loses its old
    frames (counted as drops) and the next frame classified is the newest; a file source of the same speed loses none."""
    clf = Classifier(bundle, threads=1)
    produced = {"cam": 0, "file": 0}

    def fast(name):
        for i in range(200):
            produced[name] = i + 1
            yield Frame(name, np.full((32, 32, 3), 255, np.uint8), color="bgr", index=i)

    stream = Stream(clf, [frames_source("cam", fast("cam"), live=True), frames_source("file", fast("file"))], batch=1).start()
    time.sleep(1.0)  # nothing is taken meanwhile: the camera runs through its 200 frames, the file stops at its queue
    assert produced["cam"] == 200 and produced["file"] <= 4
    seen = {"cam": [], "file": []}
    for items in stream.batches():
        for result in stream.classify(items):
            if not isinstance(result, SourceEvent):
                seen[result.source_id].append(result.index)
    assert seen["cam"] == [199]  # only the newest: 199 stale frames dropped
    assert stream.stats.sources["cam"].drops == 199 and stream.hub.drops["file"] == 0
    assert seen["file"] == list(range(200))


@pytest.mark.parametrize("form", ["one source", "several sources"])
def test_python_api_stream_captures_unsure_frames_in_both_forms(bundle, tmp_path, form):
    """``classify_stream``/``Stream`` with ``capture=Capture(...)``: edge-predict's --capture from Python, one source or several."""
    from edgeport.runtime.service.capture import Capture

    clf = Classifier(bundle, threads=1)
    mixed = np.zeros((64, 64, 3), np.uint8)
    mixed[:, :32], mixed[:, 32:] = COLOURS_BGR["red"], COLOURS_BGR["blue"]  # half red, half blue: an unsure frame
    sure = np.zeros((64, 64, 3), np.uint8)
    sure[:] = COLOURS_BGR["green"]
    top1 = clf.predict(mixed, top_k=1, color="bgr").score
    capture = Capture(tmp_path / "cap", below=min(0.999, top1 + (1 - top1) / 2), rate=3)
    frames = [Frame("cam", image, color="bgr", index=i) for i, image in enumerate([sure, mixed] * 4)]
    stream = (classify_stream(clf, frames, top_k=2, capture=capture) if form == "one source"
              else Stream(clf, [frames_source("cam", frames)], top_k=2, capture=capture))
    results = [r for r in stream if not isinstance(r, SourceEvent)]
    assert len(results) == 8 and capture.saved == 3  # 4 unsure frames, at most 3 a minute
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "cap").rglob("*.json"))]
    assert len(sidecars) == 3 and all(s["top_k"][0]["score"] < capture.below for s in sidecars)
