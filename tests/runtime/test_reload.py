"""Hot reload with rollback on real streams: a real edge-predict process, real signed bundles switched by a
symlink or an atomic rename under it, and bad bundles (wrong signature, broken self-test, truncated
model) that must never serve a frame. Each bundle prefixes its labels, so every record says which
bundle classified it."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgeport.export.signing import sign_bundle
from edgeport.runtime import Classifier
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.conformance import KIT_DIR
from edgeport.runtime.errors import ConformanceError, SignatureError, UsageError
from edgeport.runtime.reload import reload_now

from ..bundles import rehash_manifest, relabel
from ..keys import make_key_pair

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"release": make_key_pair(folder, "release"), "other": make_key_pair(folder, "other")}


@pytest.fixture(scope="module")
def releases(imagenet_bundle, keys, tmp_path_factory) -> dict[str, Path]:
    """v1 and v2 (good, signed), and three bad ones labelled ``bad:``."""
    root = tmp_path_factory.mktemp("releases")
    private = keys["release"][0]

    def make(name: str, prefix: str | None, key: Path = private, before_signing=None, after_signing=None) -> Path:
        bundle = root / name
        shutil.copytree(imagenet_bundle, bundle)
        if prefix:
            relabel(bundle, prefix)
        if before_signing:
            before_signing(bundle)
            rehash_manifest(bundle)
        sign_bundle(bundle, key)
        if after_signing:
            after_signing(bundle)
        return bundle

    def break_kit(bundle: Path) -> None:  # the runtime no longer gives the export's answers
        path = bundle / KIT_DIR / "expected" / "onnx.npy"
        np.save(path, np.load(path) + np.float32(0.5))

    def truncate(bundle: Path) -> None:  # a release pipeline that shipped (and signed) half a model
        model = bundle / "model.onnx"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    return {
        "v1": make("v1", None),
        "v2": make("v2", "v2:"),
        "bad_signature": make("bad_signature", "bad:", key=keys["other"][0]),
        "bad_self_test": make("bad_self_test", "bad:", before_signing=break_kit),
        "truncated": make("truncated", "bad:", before_signing=truncate),
    }


class Stream:
    """A real ``edge-predict --reload --watch`` process whose stdout lines are collected as they come."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([str(BIN / "edge-predict"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[dict] = queue.Queue()
        self.records: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_for(self, predicate, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"edge-predict exited early: {self.proc.stderr.read()}"
                continue
            self.records.append(record)
            if predicate(record):
                return record
        raise AssertionError(f"timed out; records so far: {self.records}")

    def finish(self) -> str:
        """Wait for the process to end; every stdout line is read by the reader thread only."""
        self.proc.wait(timeout=120)
        self._reader.join(timeout=30)
        err = self.proc.stderr.read()
        while not self.lines.empty():
            self.records.append(self.lines.get())
        return err


def _feed(folder: Path, photos: list[Path], n: int) -> Path:
    target = folder / f"frame{n:02d}{photos[n % len(photos)].suffix}"
    shutil.copy(photos[n % len(photos)], target)
    # --watch serves files modified after it started; the process may still be importing, so date it ahead.
    ahead = time.time() + 3600
    os.utime(target, (ahead, ahead))
    return target


def _switch_symlink(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)  # rename(2): atomic, the usual `ln -s … && mv -T` of a fleet update


def _frame_records(records: list[dict]) -> list[dict]:
    return [r for r in records if "event" not in r]


def _prefix(record: dict) -> str:
    label = record["top_k"][0]["label"]
    return label.split(":", 1)[0] + ":" if ":" in label else ""


def test_symlink_switch_on_a_watched_folder_stream(releases, keys, sample_photos, tmp_path):
    link, inbox = tmp_path / "current", tmp_path / "inbox"
    inbox.mkdir()
    link.symlink_to(releases["v1"], target_is_directory=True)
    stream = Stream([str(link), "--reload", "--reload-interval", "0.2", "--watch", str(inbox), "--max-files", "7",
                     "--output-format", "jsonl", "--verify-key", str(keys["release"][1]), "-k", "1"])
    fed = []

    def classify(n: int) -> dict:
        fed.append(str(_feed(inbox, sample_photos, n)))
        return stream.wait_for(lambda r: r.get("source") == fed[-1])

    assert _prefix(classify(0)) == ""
    # Three bad releases in a row: each is rejected by the check it fails, and the old model keeps serving.
    for n, (bad, check) in enumerate([("bad_signature", "signature"), ("bad_self_test", "self_test"),
                                      ("truncated", "load")], start=1):
        _switch_symlink(link, releases[bad])
        rejected = stream.wait_for(lambda r: r.get("event") == "model_update_rejected")
        assert rejected["check"] == check and rejected["candidate"] == str(releases[bad].resolve()), rejected
        assert _prefix(classify(n)) == ""
    # The good release: swapped before the next frame, which it classifies.
    _switch_symlink(link, releases["v2"])
    time.sleep(3)  # checked in the background while nothing arrives
    assert _prefix(classify(4)) == "v2:"
    for n in (5, 6):
        assert _prefix(classify(n)) == "v2:"
    stream.finish()
    assert stream.proc.returncode == 0
    frames = _frame_records(stream.records)
    assert [r["source"] for r in frames] == fed  # every frame once, in order: none lost, none twice
    assert all(r["ok"] for r in frames) and not any(_prefix(r) == "bad:" for r in frames)
    events = [r for r in stream.records if "event" in r]
    assert [e["event"] for e in events] == ["model_update_rejected"] * 3 + ["model_swap"]
    swap = events[-1]
    assert swap["old"]["bundle"] == str(releases["v1"].resolve()) and swap["new"]["bundle"] == str(releases["v2"].resolve())
    assert swap["old"]["sha256"] != swap["new"]["sha256"] and swap["checks"] == ["sha256", "signature", "self_test"]
    # The swap record sits between the last v1 frame and the first v2 frame.
    order = [r.get("event") or _prefix(r) for r in stream.records]
    assert order == ["", "model_update_rejected", "", "model_update_rejected", "", "model_update_rejected", "",
                     "model_swap", "v2:", "v2:", "v2:"]


@pytest.fixture(scope="module")
def video(sample_photos, tmp_path_factory) -> tuple[Path, int]:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    frames = 60
    images = [cv2.resize(cv2.imread(str(p)), (320, 240)) for p in sample_photos]
    for i in range(frames):
        writer.write(images[(i // 10) % len(images)])
    writer.release()
    return path, frames


def test_atomic_rename_on_a_video_stream(releases, keys, video, tmp_path):
    """The bundle folder is replaced the way edge-export replaces it (old folder renamed away, new one
    renamed into place) while a paced video streams; every frame is classified exactly once."""
    served = tmp_path / "bundle"
    shutil.copytree(releases["v1"], served)
    staged = tmp_path / ".bundle.staging"
    shutil.copytree(releases["v2"], staged)
    path, count = video
    stream = Stream([str(served), "--reload", "--reload-interval", "0.2", "--video", str(path), "--max-fps", "8",
                     "--output-format", "jsonl", "--verify-key", str(keys["release"][1]), "-k", "1"])
    stream.wait_for(lambda r: r.get("frame") == 5)
    served.rename(tmp_path / ".bundle.old")
    staged.rename(served)
    swap = stream.wait_for(lambda r: r.get("event") == "model_swap")
    stream.finish()
    assert stream.proc.returncode == 0
    frames = _frame_records(stream.records)
    assert [r["frame"] for r in frames] == list(range(count))  # none lost, none twice
    prefixes = [_prefix(r) for r in frames]
    first_new = prefixes.index("v2:")
    assert 5 < first_new < count and prefixes == [""] * first_new + ["v2:"] * (count - first_new)
    assert stream.records.index(swap) == stream.records.index(frames[first_new]) - 1
    assert swap["new"]["bundle"] == str(served.resolve())


def test_classifier_reload_swaps_or_keeps_the_old_model(releases, keys, sample_photos, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(releases["v1"], target_is_directory=True)
    clf = Classifier(link, verify_key=keys["release"][1])
    before = clf.predict(sample_photos[0])
    for bad, error in (("bad_signature", SignatureError), ("bad_self_test", ConformanceError)):
        _switch_symlink(link, releases[bad])
        with pytest.raises(error):
            reload_now(clf)
        assert clf.predict(sample_photos[0]) == before  # still the old model
    _switch_symlink(link, releases["v2"])
    record = reload_now(clf)
    assert record["event"] == "model_swap" and record["new"]["bundle"] == str(releases["v2"].resolve())
    after = clf.predict(sample_photos[0])
    assert after.label == "v2:" + before.label and after.score == pytest.approx(before.score)


def test_reload_needs_a_bundle_directory(imagenet_bundle, sample_photos):
    model_file = imagenet_bundle / "model.onnx"
    result = CliRunner().invoke(predict_main, [str(model_file), str(sample_photos[0]), "--reload"])
    assert result.exit_code == 2 and "hot reload watches a bundle directory" in result.output
    with pytest.raises(UsageError, match="needs a bundle directory"):
        reload_now(Classifier(model_file))
