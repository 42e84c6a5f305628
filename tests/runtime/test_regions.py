"""Regions per camera: each named region of a frame is classified as a stream of its own, cut before preprocessing;
its records and states go to ``<prefix>/<source>/<region>[/state]`` on a real Mosquitto; a region that cannot fit
is an error when the config loads (fractions) or at the source's first frame (pixels), never at frame 10,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgeport.runtime import Classifier
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.service.config import SourceConfig, config_from_flags, load_config
from edgeport.runtime.stream import Region
from PIL import Image, ImageOps

from .broker import Broker
from .test_mqtt import Subscriber
from .test_service_config import error_of, flags, line_of, write
from .tiny_models import colour_bundle

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("regions") / "bundle")


def _half(photo: Path) -> Image.Image:
    with Image.open(photo) as image:
        return ImageOps.fit(image.convert("RGB"), (320, 240))


def test_two_regions_of_one_frame_are_classified_independently_and_correctly(finetuned_bundle, hymenoptera_val_jpegs,
                                                                             tmp_path):
    """An ant and a bee side by side in one frame: the region on the left says ants, the one on the right bees, each
    with exactly the probabilities of its half alone (the crop comes first, the contract's resize and crop after)."""
    clf = Classifier(finetuned_bundle, threads=2)

    def sure(folder: str) -> Image.Image:  # a photo of the class this model gets right by a margin, from the first ten
        for photo in [p for p in hymenoptera_val_jpegs if p.parent.name == folder][:10]:
            half = _half(photo)
            if clf.predict(half, top_k=1).label == folder and clf.predict(half).score > 0.8:
                return half
        pytest.fail(f"none of the first ten {folder} val photos is classified {folder} with > 80%")

    ant, bee = sure("ants"), sure("bees")
    frame = Image.new("RGB", (640, 240))
    frame.paste(ant, (0, 0))
    frame.paste(bee, (320, 0))
    frame.save(tmp_path / "side_by_side.png")  # lossless: the halves are the pixels of ant and bee
    proc = subprocess.run([BIN / "edge-predict", "classify", finetuned_bundle, tmp_path / "side_by_side.png",
                           "--region", "left=0,0,0.5,1", "--region", "right=320,0,640,240px", "-k", "2",
                           "--output-format", "jsonl"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = {r["region"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert sorted(records) == ["left", "right"]
    assert records["left"]["label"] == "ants" and records["right"]["label"] == "bees"
    for region, half in (("left", ant), ("right", bee)):
        alone = dict(clf.predict(half, top_k=2).top)
        got = {e["label"]: e["score"] for e in records[region]["top_k"]}
        assert got == pytest.approx(alone, abs=1e-5), region


def _split_video(path: Path, frames: int = 12) -> Path:
    """160×120 frames: red on the left half, blue on the right (BGR)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for _ in range(frames):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, :80] = (0, 0, 255)
        frame[:, 80:] = (255, 0, 0)
        writer.write(frame)
    writer.release()
    return path


def test_region_records_and_states_have_topics_of_their_own_on_a_real_broker(bundle, tmp_path):
    broker = Broker(tmp_path / "broker").start()
    try:
        sub = Subscriber(broker, "site/#")
        video = _split_video(tmp_path / "split.avi")
        proc = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--name", f"cam={video}",
                               "--region", "left=0,0,0.5,1", "--region", "right=80,0,160,120px", "--mqtt",
                               f"{broker.url}/site", "-k", "1", "--output-format", "jsonl"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert sub.wait(lambda: any(json.loads(p).get("event") == "source_ended" for t, p, _ in sub.messages
                                    if t == "site/cam"), 10)
        for region, colour in (("left", "red"), ("right", "blue")):
            frames = sub.records(f"site/cam/{region}")
            assert [r["frame"] for r in frames] == list(range(12))
            assert {(r["region"], r["label"]) for r in frames} == {(region, colour)}
        assert not [r for r in sub.records("site/cam") if "event" not in r]  # no frame record without its region
        sub.close()
        late = Subscriber(broker, "site/cam/+/state", client_id="late")  # retained: read after the box stopped
        assert late.wait(lambda: len(late.messages) == 2, 10), late.messages
        states = {t: (json.loads(p), retained) for t, p, retained in late.messages}
        assert set(states) == {"site/cam/left/state", "site/cam/right/state"}
        for region, colour in (("left", "red"), ("right", "blue")):
            state, retained = states[f"site/cam/{region}/state"]
            assert retained and (state["label"], state["region"], state["source_id"]) == (colour, region, "cam")
        late.close()
    finally:
        broker.stop()


def test_a_pixel_region_outside_the_first_frame_stops_the_source_before_any_record(bundle, tmp_path):
    video = _split_video(tmp_path / "split.avi")
    proc = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--name", f"cam={video}",
                           "--region", "door=0,0,640,480px", "--output-format", "jsonl"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not [r for r in records if "event" not in r]  # no frame was classified
    assert "source 'cam', region 'door'" in proc.stderr and "160×120" in proc.stderr


REGIONS_OK = '''[sources.cam]
video = "cam.avi"
regions = [
  { name = "garage", box = [0.0, 0.0, 0.5, 1.0] },
  { name = "drive", pixels = [640, 0, 1280, 720] },
]
smoothing = "ema"
window = 7
hold = 2
'''


def test_regions_and_smoothing_load_from_the_file(tmp_path):
    config = load_config(write(tmp_path, REGIONS_OK))
    source = config.sources[0]
    assert source.regions == (Region("garage", (0.0, 0.0, 0.5, 1.0)), Region("drive", (640, 0, 1280, 720), pixels=True))
    assert (source.states().method, source.states().window, source.states().hold) == ("ema", 7, 2)
    assert "regions garage=0,0,0.5,1, drive=640,0,1280,720px" in config.describe()
    off = load_config(write(tmp_path, '[sources.cam]\ncamera = 0\nsmoothing = "off"\n'))
    assert off.sources[0].states() is None


@pytest.mark.parametrize("regions, says", [
    ('[{ name = "door", box = [0.0, 0.0, 1.5, 1.0] }]', "reaches outside the frame"),
    ('[{ name = "door", box = [0.5, 0.0, 0.5, 1.0] }]', "is empty: it needs x0 < x1"),
    ('[{ name = "door", box = [0.0, 0.0, 1.0] }]', "must be 4 numbers"),
    ('[{ name = "state", box = [0.0, 0.0, 1.0, 1.0] }]', "not dropped, events, state, status"),
    ('[{ name = "a", box = [0, 0, 1, 1] }, { name = "a", box = [0, 0, 1, 1] }]', "'a' is given twice"),
    ('[{ name = "a", box = [0, 0, 1, 1], pixels = [0, 0, 9, 9] }]', "one of box"),
    ('[{ name = "a", box = [0, 0, 1, 1], colour = "red" }]', "unknown key colour"),
    ('[{ name = "a", pixels = [0, 0, 9.5, 9] }]', "pixels must be whole numbers"),
    ('"door"', "must be a list of tables"),
])
def test_bad_regions_are_refused_when_the_file_loads_with_file_and_line(tmp_path, regions, says):
    text = f'model = "m"\n\n[sources.cam]\ncamera = 0\nregions = {regions}\n'
    message = error_of(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'box.toml'}:{line_of(text, 'regions')}: [sources.cam] regions: "), message
    assert says in message


@pytest.mark.parametrize("key, value, says", [("smoothing", '"median"', '"ema" or "vote" or "off"'),
                                              ("hold", "0", "whole number ≥ 1"), ("window", "2.5", "whole number ≥ 1")])
def test_bad_smoothing_is_refused_with_file_and_line(tmp_path, key, value, says):
    text = f'[sources.cam]\ncamera = 0\n{key} = {value}\n'
    message = error_of(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'box.toml'}:3: [sources.cam] {key}: ") and says in message, message


def test_region_flags_build_the_same_config_and_bad_ones_say_how_to_write_them():
    config = config_from_flags("m", (), flags(camera=(0,), regions=("door=0,0,0.5,1", "drive=10,0,20,5px"), hold=4))
    assert config.sources[0] == SourceConfig("camera1", "camera", 0, regions=(
        Region("door", (0, 0, 0.5, 1)), Region("drive", (10, 0, 20, 5), pixels=True)), hold=4)
    for bad, says in (("door=0,0,0.5", "write NAME=x0,y0,x1,y1"), ("door", "write NAME=x0,y0,x1,y1"),
                      ("door=0,0,2,1", "reaches outside the frame"), ("status=0,0,1,1", "not dropped, events")):
        with pytest.raises(ConfigError, match=says):
            config_from_flags("m", (), flags(camera=(0,), regions=(bad,)))
    with pytest.raises(ConfigError, match="--region is for one source"):
        config_from_flags("m", (), flags(camera=(0, 1), regions=("door=0,0,1,1",)))
