"""edge-predict on devices: video, camera, watched folders, streams, the fast JPEG path, no torch."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from edgeport.runtime import Classifier
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.preprocess import preprocess, preprocess_fast
from edgeport.runtime.records import UNKNOWN
from edgeport.runtime.stream import classify_stream
from PIL import Image

from ..helpers import decompression_bomb, empty_file, text_as_jpeg, truncated_jpeg

BIN = Path(sys.executable).parent
VIDEO_SIZE = (320, 240)


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _bgr_frames(photos: list[Path]) -> list[np.ndarray]:
    """The photos as OpenCV frames of one camera size: BGR uint8, like cv2 delivers them."""
    return [cv2.resize(cv2.imread(str(p)), VIDEO_SIZE, interpolation=cv2.INTER_AREA) for p in photos]


def write_video(photos: list[Path], path: Path) -> list[np.ndarray]:
    """An MJPG .avi (the codec opencv-python-headless writes here without extra libraries)."""
    frames = _bgr_frames(photos)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, VIDEO_SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


@pytest.fixture(scope="module")
def clf(imagenet_bundle) -> Classifier:
    return Classifier(imagenet_bundle, threads=2)


@pytest.fixture(scope="module")
def photos(hymenoptera_val_jpegs) -> list[Path]:
    return hymenoptera_val_jpegs[::25]  # 7 photos, ants and bees


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["imagenet_bundle", "finetuned_bundle"])
def test_fast_jpeg_path_agrees_with_the_exact_contract(bundle, request, hymenoptera_val_jpegs):
    """The default (draft-decoded) path keeps top-1 of the exact path on ≥ 99.5% of the val photos."""
    clf = Classifier(request.getfixturevalue(bundle), threads=2)
    exact = np.stack([preprocess(p, clf.contract) for p in hymenoptera_val_jpegs])
    fast = np.stack([preprocess_fast(p, clf.contract) for p in hymenoptera_val_jpegs])
    assert fast.shape == exact.shape and fast.dtype == np.float32
    assert np.abs(fast - exact).mean() < 0.05  # same geometry: a misplaced crop would be ~0.5
    agreement = (clf.logits_from_tensor(fast).argmax(1) == clf.logits_from_tensor(exact).argmax(1)).mean()
    assert agreement >= 0.995, agreement
    assert not clf.exact_preprocess and Classifier(clf.model_path, exact_preprocess=True).exact_preprocess


def test_a_large_jpeg_is_draft_decoded_to_the_same_picture(clf, photos, tmp_path):
    """A camera-sized JPEG (4× a val photo) is DCT-downscaled while decoding, not decoded in full."""
    big = tmp_path / "big.jpg"
    with Image.open(photos[0]) as img:
        img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC).save(big, quality=95)
    exact, fast = preprocess(big, clf.contract), preprocess_fast(big, clf.contract)
    assert np.abs(fast - exact).mean() < 0.05
    assert clf.predict(big).label == Classifier(clf.model_path, exact_preprocess=True).predict(big).label


def test_a_bgr_frame_gives_the_result_of_the_rgb_image(clf, photos):
    for path in photos[:3]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        from_rgb = clf.scores([Image.fromarray(rgb)])[0]
        np.testing.assert_allclose(clf.scores([bgr], color="bgr")[0], from_rgb, atol=1e-6)
        swapped = clf.scores([bgr], color="rgb")[0]  # the classic bug: BGR fed as RGB
        assert np.abs(swapped - from_rgb).max() > 1e-3
        # OpenCV's own JPEG decoder, as a camera app would read the file
        assert clf.predict(cv2.imread(str(path)), color="bgr").label == clf.predict(path).label


def test_stream_reports_bad_frames_and_goes_on(clf, photos, tmp_path):
    assert len(clf.labels) == 1000 and clf.contract.input_size == (224, 224)
    good = photos[0]
    frames = [
        good,
        np.zeros((10, 10, 7), np.uint8),  # a corrupt frame: no image has 7 channels
        truncated_jpeg(good, tmp_path / "truncated.jpg"),
        empty_file(tmp_path / "zero.jpg"),
        text_as_jpeg(tmp_path / "text.jpg"),
        decompression_bomb(tmp_path / "bomb.png"),
        good.read_bytes(),
        Image.open(photos[1]),
    ]
    results = list(classify_stream(clf, frames, top_k=3, color="bgr"))
    assert [r.ok for r in results] == [True, False, False, False, False, False, True, True]
    for result, words in zip(results[1:6], ["HxWx3", "truncated", "0 bytes", "not an image", "decompression bomb"]):
        assert words in result.error
    assert results[2].source == str(tmp_path / "truncated.jpg") and results[0].source == str(good)
    assert results[0].top == results[6].top and len(results[0].top) == 3 and results[0].latency_ms > 0
    unknown = list(classify_stream(clf, [good], threshold=1.0))[0]
    assert unknown.label == UNKNOWN and unknown.top[0][0] != UNKNOWN


def test_video_every_nth_frame(clf, photos, tmp_path):
    video = tmp_path / "clip.avi"
    written = write_video(photos, video)
    result = CliRunner().invoke(predict_main, [str(clf.model_path), "--video", str(video), "--every", "2",
                                               "--format", "jsonl", "-k", "1"])
    assert result.exit_code == 0, result.output
    records = _records(result.stdout)
    assert [r["frame"] for r in records] == [0, 2, 4, 6] and all(r["source"] == str(video) for r in records)
    stamps = [r["timestamp"] for r in records]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
    # The same frames as cv2 decodes them, through the API: identical labels, so BGR is handled.
    capture = cv2.VideoCapture(str(video))
    decoded = [capture.read()[1] for _ in range(len(written))]
    capture.release()
    assert [r["label"] for r in records] == [clf.predict(decoded[i], color="bgr").label for i in (0, 2, 4, 6)]
    # Lossy MJPG at 320×240 still classifies most frames like the original photos.
    same = sum(r["label"] == clf.predict(photos[r["frame"]]).label for r in records)
    assert same >= 3, records
    assert "4 classified, 0 failed" in result.stderr and "FPS" in result.stderr


class FakeCapture:
    """Stands in for a camera (none can exist here): serves real BGR frames, then stops."""

    instances: list["FakeCapture"] = []

    def __init__(self, index, frames):
        self.index, self.frames, self.released = index, list(frames), False
        FakeCapture.instances.append(self)

    def isOpened(self):
        return self.index == 0

    def grab(self):
        return bool(self.frames and self.frames.pop(0) is not None)

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return 0.0

    def release(self):
        self.released = True


def test_camera_frames_through_a_fake_capture(clf, photos, monkeypatch):
    frames = _bgr_frames(photos[:4])
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: FakeCapture(index, frames))
    FakeCapture.instances.clear()
    args = [str(clf.model_path), "--camera", "0", "--format", "csv", "-k", "2", "--threshold", "0.5"]
    result = CliRunner().invoke(predict_main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3] and all(r["source"] == "camera:0" for r in rows)
    for row, frame in zip(rows, frames):
        pred = clf.predict(frame, color="bgr")
        assert row["label"] == (pred.label if pred.score >= 0.5 else UNKNOWN)
        assert len(row["top_k"].split(";")) == 2 and float(row["latency_ms"]) > 0
    assert FakeCapture.instances[0].released
    unplugged = CliRunner().invoke(predict_main, [str(clf.model_path), "--camera", "3"])
    assert unplugged.exit_code == 2 and "camera 3" in unplugged.output


def _drop_files_later(folder: Path, sources: list[Path], delay: float = 0.3) -> threading.Thread:
    """Another process's camera app, saving photos into the watched folder one by one."""

    def run():
        for i, src in enumerate(sources):
            time.sleep(delay)
            tmp = folder / f".part{i}"
            shutil.copy(src, tmp)
            os.replace(tmp, folder / f"{i:02d}_{src.name}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_classifies_new_files_and_stops(clf, photos, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(photos[0], folder / "already_there.jpg")  # present before the watch: not reported
    bad = text_as_jpeg(tmp_path / "bad.jpg")
    writer = _drop_files_later(folder, [photos[1], bad, photos[2]])
    args = [str(clf.model_path), "--watch", str(folder), "--max-files", "3", "--watch-timeout", "30", "--format", "jsonl"]
    result = CliRunner().invoke(predict_main, args)
    writer.join()
    assert result.exit_code == 6, result.output  # one watched file was not an image
    records = _records(result.stdout)
    assert [Path(r["source"]).name for r in records] == ["00_" + photos[1].name, "01_bad.jpg", "02_" + photos[2].name]
    assert [r["ok"] for r in records] == [True, False, True]
    assert "2 classified, 1 failed" in result.stderr
    idle = CliRunner().invoke(predict_main, [str(clf.model_path), "--watch", str(folder), "--watch-timeout", "0.3"])
    assert idle.exit_code == 0 and "0 classified, 0 failed" in idle.stderr


def test_usage_errors(clf, tmp_path):
    runner = CliRunner()
    nothing = runner.invoke(predict_main, [str(clf.model_path)])
    assert nothing.exit_code == 2 and "exactly one of" in nothing.output
    both = runner.invoke(predict_main, [str(clf.model_path), "x.jpg", "--video", "v.avi"])  # two sources now (service mode)
    assert both.exit_code == 2 and "v.avi: no such video file" in both.output
    missing = runner.invoke(predict_main, [str(clf.model_path), "--video", str(tmp_path / "none.avi")])
    assert missing.exit_code == 2 and "no such video file" in missing.output
    (tmp_path / "fake.avi").write_text("not a video")
    broken = runner.invoke(predict_main, [str(clf.model_path), "--video", str(tmp_path / "fake.avi")])
    assert broken.exit_code == 2 and "cannot open this video" in broken.output


def test_ctrl_c_stops_with_the_summary(clf, photos, tmp_path):
    """A real process watching a folder that a camera app keeps saving into; SIGINT after its first result."""
    folder = tmp_path / "watched"
    folder.mkdir()
    # A shell without job control starts background jobs with SIGINT ignored, and Python then installs no Ctrl-C
    # handler: give the child the default action, as a terminal's process has.
    proc = subprocess.Popen([str(BIN / "edge-predict"), str(clf.model_path), "--watch", str(folder), "--format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    killer = threading.Timer(120, proc.kill)  # a hung process fails the test instead of hanging it
    killer.start()
    stop = threading.Event()

    def save_photos():  # one photo every 0.5 s, however long the process takes to start
        for i in range(240):
            if stop.wait(0.5):
                return
            shutil.copy(photos[0], folder / f".part{i}")
            os.replace(folder / f".part{i}", folder / f"{i:03d}.jpg")

    saver = threading.Thread(target=save_photos, daemon=True)
    saver.start()
    try:
        first = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        stop.set()
        killer.cancel()
    assert first["ok"] and first["source"].endswith(".jpg")
    assert proc.returncode == 130, err
    shown = 1 + len(_records(rest))
    assert re.search(rf"interrupted: {shown} classified, 0 failed, latency mean [\d.]+ / p50", err), err
    assert "Traceback" not in err


BLOCK_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is blocked in this test: the runtime must not import it")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["edge-predict", *sys.argv[1:]]
try:
    runpy.run_module("edgeport.runtime.cli", run_name="__main__")
finally:
    assert not any(m.split(".")[0] == "torch" for m in sys.modules), "torch was imported"
"""


def test_video_files_and_stream_run_where_torch_cannot_be_imported(clf, photos, tmp_path):
    video = tmp_path / "clip.avi"
    write_video(photos[:3], video)
    assert importlib.util.find_spec("torch") is not None  # torch is installed here: the blocker keeps it out
    runs = {
        "video": ["--video", str(video)],
        "files": [str(photos[0]), str(text_as_jpeg(tmp_path / "bad.jpg"))],
    }
    for name, args in runs.items():
        out = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(clf.model_path), *args, "--format", "jsonl"],
                             capture_output=True, text=True, timeout=120)
        records = _records(out.stdout)
        if name == "video":
            assert out.returncode == 0, out.stderr
            assert [r["frame"] for r in records] == [0, 1, 2] and all(r["ok"] for r in records)
        else:
            assert out.returncode == 6, out.stderr
            assert [r["ok"] for r in records] == [True, False]
        assert "torch was imported" not in out.stderr


def test_max_fps_paces_files_and_drops_stale_live_frames():
    """A file source waits between frames; a live one (camera) skips the frames that came too soon,
    so the one classified is the freshest."""
    from edgeport.runtime.frames import Frame, paced

    files = [Frame(f"f{i}.jpg") for i in range(4)]
    began = time.monotonic()
    assert [f.source for f in paced(files, max_fps=20)] == [f.source for f in files]
    assert time.monotonic() - began >= 3 / 20 * 0.9  # three waits of 50 ms

    def camera():  # a frame every 10 ms
        for i in range(30):
            time.sleep(0.01)
            yield Frame("camera:0", index=i)

    kept = [f.index for f in paced(camera(), max_fps=20, live=True)]
    assert 3 <= len(kept) <= 12 and kept == sorted(kept) and kept[0] == 0  # ~300 ms at ≤ 20 FPS
    assert all(b - a >= 3 for a, b in zip(kept, kept[1:]))  # ≥ 50 ms apart: stale frames dropped
    assert [f.index for f in paced(camera(), max_fps=None, live=True)] == list(range(30))


def test_edge_predict_on_the_openvino_backend_matches_onnxruntime(finetuned_bundle, photos):
    args = [str(finetuned_bundle), *map(str, photos), "--format", "csv", "-k", "1", "--threads", "2"]
    runs = {name: CliRunner().invoke(predict_main, [*args, "--backend", name]) for name in ("onnxruntime", "openvino")}
    rows = {}
    for name, result in runs.items():
        assert result.exit_code == 0, result.output
        rows[name] = list(csv.DictReader(io.StringIO(result.stdout)))
        assert len(rows[name]) == len(photos) and f"{len(photos)} classified, 0 failed" in result.stderr
    assert [r["label"] for r in rows["openvino"]] == [r["label"] for r in rows["onnxruntime"]]
    scores = {n: np.array([float(r["score"]) for r in rs]) for n, rs in rows.items()}
    assert np.abs(scores["openvino"] - scores["onnxruntime"]).max() < 1e-3
    table = CliRunner().invoke(predict_main, [str(finetuned_bundle), str(photos[0]), "--backend", "openvino"])
    assert table.exit_code == 0 and photos[0].name in table.stdout and "ants" in table.stdout
