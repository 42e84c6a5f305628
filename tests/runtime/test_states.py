"""Stable states: a video of real photos (ants for 40 frames, then bees) with single frames of the other class,
blanked and corrupted frames dropped in at random gives exactly one state change, near the true one; the state is
retained on a real Mosquitto, so a subscriber that comes later reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgeport.runtime import Classifier
from edgeport.runtime.errors import UsageError
from edgeport.runtime.frames import video_frames
from edgeport.runtime.records import UNKNOWN, StreamResult
from edgeport.runtime.stream import DEFAULT_SMOOTHING, SMOOTHERS, Smoothing, StateChange, StateTracker, classify_stream

from benchmarks.states import TRUE_CHANGE, make_state_video, pick_scenes, score_run, sure_scenes

from .broker import Broker
from .test_mqtt import Subscriber

BIN = Path(sys.executable).parent


def _result(index: int, label: str, score: float = 0.9, error: str | None = None) -> StreamResult:
    other = {"ants": "bees", "bees": "ants"}.get(label, "ants")
    top = () if error else ((label, score), (other, round(1 - score, 6)))
    return StreamResult("cam", index, index / 10, top, None if error else label, 1.0, error)


def _states(smoothing: Smoothing, labels: list[str | None]) -> list[StateChange]:
    """A tracker fed one result per label (None: a frame that failed to decode)."""
    tracker = StateTracker(smoothing)
    results = [_result(i, label or "ants", error="corrupt" if label is None else None) for i, label in enumerate(labels)]
    return [c for r in results if (c := tracker.see(r, r.source, "cam")) is not None]


@pytest.mark.parametrize("method", SMOOTHERS)
def test_single_other_frames_and_errors_do_not_change_the_state_and_a_lasting_change_does(method):
    labels = ["ants"] * 10 + ["bees"] + ["ants"] * 5 + [None, None] + ["ants"] * 3 + ["bees"] * 10
    changes = _states(Smoothing(method, 5, 3), labels)
    assert [(c.previous, c.label) for c in changes] == [(None, "ants"), ("ants", "bees")]
    assert 21 <= changes[1].since_frame <= 21 + 3 and changes[1].confirmed_frame - changes[1].since_frame == 2  # held 3 frames
    assert changes[1].record()["region"] is None and changes[1].record()["source_id"] == "cam"


@pytest.mark.parametrize("method", SMOOTHERS)
def test_a_lasting_unknown_becomes_the_state_unknown(method):
    tracker = StateTracker(Smoothing(method, 3, 2))
    results = [_result(i, "ants") for i in range(5)] + [
        StreamResult("cam", i, None, (("ants", 0.4), ("bees", 0.35)), UNKNOWN, 1.0) for i in range(5, 12)]
    changes = [c for r in results if (c := tracker.see(r, "cam", None)) is not None]
    assert [c.label for c in changes] == ["ants", UNKNOWN]


def test_smoothing_settings_are_checked():
    for bad in ({"method": "median"}, {"window": 0}, {"hold": True}):
        with pytest.raises(UsageError):
            Smoothing(**bad)


@pytest.fixture(scope="module")
def scenes(hymenoptera_val_jpegs) -> dict[str, list[Path]]:
    return {c: [p for p in hymenoptera_val_jpegs if p.parent.name == c] for c in ("ants", "bees")}


@pytest.fixture(scope="module")
def sure(finetuned_bundle, scenes) -> tuple[list[Path], list[Path]]:
    """The val photos the model gets right undisturbed: the benchmark's scenes (benchmarks/states.py)."""
    clf = Classifier(finetuned_bundle, threads=2)
    return sure_scenes(clf, scenes["ants"], "ants"), sure_scenes(clf, scenes["bees"], "bees")


def _video(scenes: dict[str, list[Path]], sure: tuple[list[Path], list[Path]], path: Path, seed: int):
    return make_state_video(path, *pick_scenes(scenes["ants"], scenes["bees"], *sure, seed), seed=seed, rate=0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_disturbed_video_of_real_photos_gives_exactly_one_state_change_near_the_true_one(finetuned_bundle, scenes,
                                                                                            sure, tmp_path, seed):
    video = _video(scenes, sure, tmp_path / "door.avi", seed)
    assert set(video.disturbed.values()) == {"other", "blank", "corrupt"}  # every kind of disturbance is in it
    clf = Classifier(finetuned_bundle, threads=2)
    items = list(classify_stream(clf, video_frames(video.path), top_k=2, smoothing=DEFAULT_SMOOTHING))
    results = [i for i in items if isinstance(i, StreamResult)]
    assert len(results) == 80
    disturbed_labels = {i: r.label for i, r in enumerate(results) if i in video.disturbed}
    assert any(label == ("bees" if i < TRUE_CHANGE else "ants") for i, label in disturbed_labels.items()), \
        "no disturbance fooled the model on its own frame: the video would test nothing"
    changes = [i for i in items if isinstance(i, StateChange)]
    run = score_run(changes)
    assert run["right"] and run["changes"] == 1, [c.record() for c in changes]
    hold = DEFAULT_SMOOTHING.hold
    assert 0 <= run["since_error"] <= hold, run  # the bees' state begins within N frames of the true change


def test_the_state_is_retained_on_a_real_broker_for_a_late_subscriber(finetuned_bundle, scenes, sure, tmp_path):
    video = _video(scenes, sure, tmp_path / "door.avi", 0)
    broker = Broker(tmp_path / "broker").start()
    try:
        proc = subprocess.run([BIN / "edge-predict", "serve", finetuned_bundle, "--video", video.path, "--name",
                               f"door={video.path}", "--mqtt", f"{broker.url}/home", "-k", "2", "--output-format", "jsonl"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        printed = [r for r in map(json.loads, proc.stdout.splitlines()) if r.get("event") == "state"]
        assert [(r["previous"], r["label"]) for r in printed] == [(None, "ants"), ("ants", "bees")]
        late = Subscriber(broker, "home/door/state", client_id="home-assistant")  # subscribes after the box stopped
        assert late.wait(lambda: late.messages, 10), "no retained state"
        topic, payload, retained = late.messages[0]
        state = json.loads(payload)
        assert (topic, retained) == ("home/door/state", True)
        assert (state["label"], state["source_id"], state["region"], state["previous"]) == ("bees", "door", None, "ants")
        assert state == printed[-1] and {"score", "since", "since_frame", "source"} <= set(state)
        late.close()
    finally:
        broker.stop()
