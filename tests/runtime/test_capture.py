"""--capture: unsure frames (low top-1 or a small margin) kept as JPEG + JSON sidecar, rate-limited per source, under a
disk quota with the oldest deleted first; the folder layout is what edge-train reads once sorted into class folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgeport.runtime import Classifier
from edgeport.runtime.errors import UsageError
from edgeport.runtime.frames import Frame
from edgeport.runtime.service.capture import Capture
from edgeport.runtime.stream import SourceEvent, Stream, classify_stream, frames_source
from PIL import Image

from .test_service import COLOURS_BGR, colour_video
from .tiny_models import colour_bundle

BIN = Path(sys.executable).parent
GREY = (132, 145, 153)  # BGR: equal after the ImageNet mean/std, so the colour model is unsure


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("capture") / "bundle")


def _frames(colours, size=64):
    for i, bgr in enumerate(colours):
        image = np.zeros((size, size, 3), np.uint8)
        image[:] = bgr
        yield Frame("cam", image, color="bgr", index=i)


def test_unsure_frames_are_kept_with_a_sidecar_and_sure_ones_are_not(bundle, tmp_path):
    clf = Classifier(bundle, threads=1)
    grey_score = clf.predict(np.full((64, 64, 3), GREY, np.uint8), color="bgr").score
    red_score = clf.predict(np.full((64, 64, 3), (0, 0, 255), np.uint8), color="bgr").score
    assert grey_score < 0.6 < red_score  # the model is unsure about grey, sure about red
    capture = Capture(tmp_path / "cap", below=0.6, rate=100, model_sha256="ab" * 32)
    colours = [COLOURS_BGR["red"], GREY] * 4
    results = [r for r in Stream(clf, [frames_source("door", _frames(colours))], capture=capture, top_k=3)
               if not isinstance(r, SourceEvent)]
    assert len(results) == 8
    jpegs = sorted((tmp_path / "cap" / "door").glob("*.jpg"))
    assert len(jpegs) == 4 and capture.saved == 4
    for jpeg in jpegs:
        sidecar = json.loads(jpeg.with_suffix(".json").read_text())
        assert sidecar["source_id"] == "door" and sidecar["frame"] % 2 == 1 and sidecar["model_sha256"] == "ab" * 32
        assert sidecar["top_k"][0]["score"] < 0.6 and len(sidecar["top_k"]) == 3 and "top-1" in sidecar["reason"]
        pixel = np.asarray(Image.open(jpeg))[10, 10]
        assert np.abs(pixel.astype(int) - GREY[::-1]).max() <= 3  # the grey picture, as RGB


def test_margin_catches_a_close_second(bundle, tmp_path):
    clf = Classifier(bundle, threads=1)
    magenta = (255, 0, 255)  # red and blue about even: a confident-looking top-1 can still be a coin toss
    result = next(r for r in classify_stream(clf, _frames([magenta]), top_k=2))
    margin = result.top[0][1] - result.top[1][1]
    capture = Capture(tmp_path / "cap", below=None, margin=margin + 0.01, rate=10)
    assert capture.why(result) and "margin" in capture.why(result)
    assert Capture(tmp_path / "cap2", below=None, margin=max(0.0, margin - 0.01), rate=10).why(result) is None


def test_rate_and_quota(bundle, tmp_path):
    clf = Classifier(bundle, threads=1)
    limited = Capture(tmp_path / "rate", below=0.6, rate=3)
    list(Stream(clf, [frames_source("a", _frames([GREY] * 10)), frames_source("b", _frames([GREY] * 10))], capture=limited))
    assert len(list((tmp_path / "rate" / "a").glob("*.jpg"))) == 3 and len(list((tmp_path / "rate" / "b").glob("*.jpg"))) == 3
    one = limited._size(next((tmp_path / "rate" / "a").glob("*.jpg")))
    quota = Capture(tmp_path / "quota", below=0.6, rate=1000, max_mb=(one * 3.5) / 2**20)
    list(Stream(clf, [frames_source("a", _frames([GREY] * 10, size=96))], capture=quota))
    kept = sorted((tmp_path / "quota" / "a").glob("*.jpg"))
    assert quota.saved == 10 and quota.deleted >= 7 and 1 <= len(kept) <= 3
    assert [json.loads(p.with_suffix(".json").read_text())["frame"] for p in kept] == list(range(10 - len(kept), 10))
    assert not [p for p in (tmp_path / "quota" / "a").iterdir() if p.suffix == ".json" and not p.with_suffix(".jpg").exists()]


def test_capture_needs_a_criterion(tmp_path):
    with pytest.raises(UsageError):
        Capture(tmp_path / "c", below=None, margin=None)


def test_edge_predict_capture_folder_in_a_service(bundle, tmp_path):
    video = tmp_path / "v.avi"
    colour_video(video, ["red", "green", "blue"] * 2)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (80, 60), GREY[::-1]).save(folder / "grey.png")
    proc = subprocess.run([BIN / "edge-predict", bundle, str(folder), "--video", video, "--capture", tmp_path / "cap",
                           "--capture-below", "0.6", "--output-format", "jsonl"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "cap").iterdir()] == ["files1"]  # only the grey picture was unsure
    sidecar = json.loads(next((tmp_path / "cap" / "files1").glob("*.json")).read_text())
    assert sidecar["source"].endswith("grey.png") and len(sidecar["model_sha256"]) == 64
