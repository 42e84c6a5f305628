"""The review page's server and folders without a browser (tests/runtime/test_review_browser.py drives it with one):
labels land atomically in the trainer's layout and CSV, and hostile requests (no token, path traversal with ``..``,
URL-encoded names and symlinks, oversized or non-JSON bodies, labels not in the class list, a foreign Host) get a 4xx
and change nothing on disk. After a hot reload to a model with other labels, the page offers the new model's classes. Also the ``[ui]`` / ``[homeassistant]`` config, and Home Assistant discovery from a real
``edge-predict serve`` through a real Mosquitto broker, checked against HA's MQTT sensor schema."""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from edgeport.runtime import Classifier
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.frames import Frame
from edgeport.runtime.service.capture import Capture
from edgeport.runtime.service.config import UiConfig, load_config
from edgeport.runtime.service.config import config_from_flags as from_flags
from edgeport.runtime.service.live import FanOut, LiveView
from edgeport.runtime.service.review import UNKNOWN_FOLDER, ReviewStore
from edgeport.runtime.service.review_server import MAX_BODY, ReviewServer
from edgeport.runtime.stream import Stream, frames_source

from .broker import Broker
from .mjpeg_server import free_port, solid_jpeg
from .test_mqtt import Subscriber
from .test_service import colour_video
from .test_service_config import flags
from .tiny_models import colour_bundle, colour_bundle_with_kit

BIN = Path(sys.executable).parent
GREY = (132, 145, 153)  # BGR: the colour model is unsure about it, so capture keeps it
TOKEN = "review-token-0123456789abcdef"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("review") / "bundle")


def _greys(n: int):
    for i in range(n):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:] = GREY
        image[0, : i + 1] = (0, 0, 255)  # each frame a little different
        yield Frame("door", image, color="bgr", index=i)


@pytest.fixture
def box(bundle, tmp_path):
    """Six real captures of the colour model in captures/door, and the page's server over them with a token."""
    clf = Classifier(bundle, threads=1)
    capture = Capture(tmp_path / "captures", below=0.99, rate=100)
    live = LiveView()
    list(Stream(clf, [frames_source("door", _greys(6))], capture=FanOut([capture, live]), sinks=[live], top_k=3))
    assert capture.saved == 6
    store = ReviewStore(tmp_path / "captures", tmp_path / "dataset", clf.labels)
    server = ReviewServer(UiConfig(0, str(tmp_path / "dataset"), token=TOKEN), store, live).start()
    yield server, tmp_path
    server.stop()


def _tree(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` (links not followed) → its content's sha256 (or where a link points)."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                out[str(path)] = (f"-> {os.readlink(path)}" if path.is_symlink() else
                                  hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir")
    return out


def _ask(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, token: str | None = TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    conn.request(method, path, body=body, headers=sent)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data, dict(answer.getheaders())


def _label(port: int, source: str, name: str, label: str, **kw):
    return _ask(port, "POST", "/api/label", json.dumps({"source": source, "name": name, "label": label}).encode(), **kw)


def test_labels_go_atomically_to_the_class_folder_and_the_csv_and_the_capture_leaves_the_grid(box):
    server, root = box
    status, data, _ = _ask(server.port, "GET", "/api/status")
    state = json.loads(data)
    assert status == 200 and state["classes"] == ["red", "green", "blue"] and len(state["captures"]) == 6
    door = state["cameras"]["door"]
    assert door["has_frame"] and door["label"] in ("red", "green", "blue") and 0 < door["score"] <= 1
    first, second, third, fourth = state["captures"][:4]
    assert [t["label"] for t in first["top_k"]] and len(first["top_k"]) == 3
    status, jpeg, headers = _ask(server.port, "GET", f"/capture/door/{first['name']}")
    assert status == 200 and jpeg[:2] == b"\xff\xd8" and headers["Content-Type"] == "image/jpeg"
    assert _ask(server.port, "GET", "/live/door.jpg")[1][:2] == b"\xff\xd8"

    status, data, _ = _label(server.port, "door", first["name"], "green")
    assert status == 200 and json.loads(data)["counts"]["green"] == 1
    labelled = root / "dataset" / "green" / f"door_{first['name']}"
    assert labelled.read_bytes() == jpeg
    assert not (root / "captures" / "door" / first["name"]).exists()
    assert not (root / "captures" / "door" / first["name"]).with_suffix(".json").exists()
    assert _label(server.port, "door", second["name"], "unknown")[0] == 200
    assert (root / "dataset" / UNKNOWN_FOLDER / f"door_{second['name']}").is_file()
    assert _label(server.port, "door", third["name"], "delete")[0] == 200
    assert not list((root / "dataset").rglob(f"*{third['name']}"))
    assert _label(server.port, "door", fourth["name"], "red")[0] == 200
    with open(root / "dataset" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"path": f"green/door_{first['name']}", "label": "green"}, {"path": f"red/door_{fourth['name']}", "label": "red"}]
    counts = json.loads(_ask(server.port, "GET", "/api/status")[1])["counts"]
    assert counts == {"red": 1, "green": 1, "blue": 0, "unknown": 1, "delete": 1}
    assert _label(server.port, "door", first["name"], "green")[0] == 404  # labelled already: gone from the captures
    assert not [p for p in (root / "dataset").rglob("*.tmp")]


def test_a_label_interrupted_before_the_capture_was_removed_is_redone_without_a_second_row(box):
    server, root = box
    name = json.loads(_ask(server.port, "GET", "/api/status")[1])["captures"][0]["name"]
    server.store.dataset.joinpath("blue").mkdir(parents=True)
    # the state a kill between "copy + CSV" and "remove the capture" leaves: the copy exists, the capture too
    (server.store.dataset / "blue" / f"door_{name}").write_bytes(b"half")
    assert _label(server.port, "door", name, "blue")[0] == 200
    assert _label(server.port, "door", json.loads(_ask(server.port, "GET", "/api/status")[1])["captures"][0]["name"],
                  "blue")[0] == 200
    rows = list(csv.DictReader(open(root / "dataset" / "labels.csv", newline="")))
    assert len(rows) == len({r["path"] for r in rows}) == 2
    assert (server.store.dataset / "blue" / f"door_{name}").read_bytes()[:2] == b"\xff\xd8"  # the real JPEG


def test_hostile_requests_get_4xx_and_write_nothing(box, tmp_path_factory):
    server, root = box
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.txt"
    secret.write_text("not for the page")
    name = json.loads(_ask(server.port, "GET", "/api/status")[1])["captures"][0]["name"]
    # a planted symlink with a capture's name (and a marked sidecar) pointing out of the folder, and a source folder
    # that is a symlink to a folder outside holding a genuine-looking pair
    planted = "20260101T000000.000000Z_1.jpg"
    os.symlink(secret, root / "captures" / "door" / planted)
    (root / "captures" / "door" / planted).with_suffix(".json").write_text(json.dumps({"edgeport_capture": 1}))
    (outside / "cam").mkdir()
    (outside / "cam" / planted).write_bytes(b"\xff\xd8outside")
    (outside / "cam" / planted).with_suffix(".json").write_text(json.dumps({"edgeport_capture": 1}))
    os.symlink(outside / "cam", root / "captures" / "evil")
    (root / "dataset").mkdir()
    os.symlink(outside, root / "dataset" / "blue")  # a class folder planted as a link out of the dataset
    before = _tree(root, outside)
    port = server.port

    refused = [
        (401, _ask(port, "GET", "/", token=None)), (401, _ask(port, "GET", "/api/status", token=None)),
        (401, _ask(port, "GET", f"/capture/door/{name}", token=None)), (401, _label(port, "door", name, "red", token=None)),
        (401, _ask(port, "GET", "/api/status", token="wrong-token-0123456789")),
        (401, _ask(port, "GET", "/api/status", token=None, headers={"Cookie": "edgeport_ui=nope"})),
        (401, _ask(port, "GET", "/?token=nope", token=None)),
        (404, _ask(port, "GET", "/capture/door/../../secret.txt")),
        (404, _ask(port, "GET", "/capture/..%2F..%2F..%2Foutside/secret.txt")),
        (404, _ask(port, "GET", "/capture/door/%2e%2e%2f%2e%2e%2fsecret.txt")),
        (404, _ask(port, "GET", f"/capture/door/{planted}")), (404, _ask(port, "GET", f"/capture/evil/{planted}")),
        (404, _ask(port, "GET", "/live/..%2F..%2Fetc%2Fpasswd.jpg")),
        (404, _label(port, "door", "../../../outside/secret.txt", "red")), (404, _label(port, "..", name, "red")),
        (404, _label(port, "door/../door", name, "red")), (404, _label(port, "door", "%2e%2e%2f" + name, "red")),
        (404, _label(port, "door", planted, "red")), (404, _label(port, "evil", planted, "red")),
        (400, _label(port, "door", name, "wasp")), (400, _label(port, "door", name, "../red")),
        (400, _label(port, "door", name, ".unknown")), (400, _label(port, "door", name, "")),
        (409, _label(port, "door", name, "blue")),  # the symlinked class folder: refused, nothing copied through it
        (400, _ask(port, "POST", "/api/label", b"{not json")), (400, _ask(port, "POST", "/api/label", b"[1, 2]")),
        (413, _ask(port, "POST", "/api/label", b"x" * (MAX_BODY + 1))),
        (413, _ask(port, "POST", "/api/label", b"{}", headers={"Content-Length": str(10**9)})),
        (415, _ask(port, "POST", "/api/label", b"source=door", headers={"Content-Type": "application/x-www-form-urlencoded"})),
        (404, _ask(port, "POST", "/api/other", b"{}")),
    ]
    for i, (expected, (status, data, _)) in enumerate(refused):
        assert status == expected, (i, status, data)
        assert "error" in json.loads(data)
    assert _tree(root, outside) == before  # nothing written, moved or deleted
    assert secret.read_text() == "not for the page"


def test_without_a_token_the_page_answers_loopback_hosts_only(bundle, tmp_path):
    store = ReviewStore(tmp_path / "captures", tmp_path / "dataset", ("red", "green", "blue"))
    server = ReviewServer(UiConfig(0, str(tmp_path / "dataset")), store, LiveView()).start()
    try:
        assert _ask(server.port, "GET", "/api/status", token=None)[0] == 200
        # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1
        assert _ask(server.port, "GET", "/api/status", token=None, headers={"Host": "evil.example:80"})[0] == 403
        assert _label(server.port, "door", "x.jpg", "red", token=None, headers={"Host": "evil.example"})[0] == 403
    finally:
        server.stop()
    assert not (tmp_path / "dataset").exists()


def test_a_token_in_the_url_sets_an_httponly_cookie(box):
    server, _ = box
    status, page, headers = _ask(server.port, "GET", f"/?token={TOKEN}", token=None)
    assert status == 200 and b"edgeport review" in page
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert _ask(server.port, "GET", "/api/status", token=None, headers={"Cookie": cookie})[0] == 200


def test_ui_and_homeassistant_config(tmp_path, monkeypatch):
    base = 'model = "m"\n[sources.door]\ncamera = 0\n[capture]\ndir = "cap"\n'
    path = tmp_path / "box.toml"
    monkeypatch.setenv("UI_TOKEN", TOKEN)
    path.write_text(base + '[ui]\nport = 8090\ndataset = "data"\nhost = "0.0.0.0"\ntoken_env = "UI_TOKEN"\n'
                           '[mqtt]\nurl = "mqtt://b/p"\n[homeassistant]\n')
    config = load_config(path)
    assert config.ui.dataset == str(tmp_path / "data") and config.ui.token == TOKEN and TOKEN not in repr(config.ui)
    assert TOKEN not in config.describe() and "token set" in config.describe()
    assert config.homeassistant.discovery_prefix == "homeassistant"
    for text, message in [
        ('[ui]\nport = 8090\ndataset = "d"\nhost = "0.0.0.0"\n', r"box.toml:\d+: \[ui\] host: \"0.0.0.0\" is reachable"),
        ('[ui]\nport = 8090\ndataset = "d"\ntoken = "x"\n', r"\[ui\] token: unknown key"),
        ('[ui]\nport = 8090\ndataset = "d"\nlabels_csv = "../x.csv"\n', r"\[ui\] labels_csv: must be a file name"),
        ('[homeassistant]\n', r"\[homeassistant\]: discovery goes through the broker"),
    ]:
        path.write_text(base + text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    path.write_text('model = "m"\n[sources.door]\ncamera = 0\n[ui]\nport = 1\ndataset = "d"\n')
    with pytest.raises(ConfigError, match=r"\[ui\]: the review page shows what capture keeps"):
        load_config(path)
    with pytest.raises(ConfigError, match="^--ui-port needs --ui-dataset"):
        from_flags("m", (), flags(camera=(0,), capture_dir="c", ui_port=8090))
    with pytest.raises(ConfigError, match="^--ui-port: the review page shows what capture keeps"):
        from_flags("m", (), flags(camera=(0,), ui_port=8090, ui_dataset="d"))
    monkeypatch.delenv("EDGEPORT_UI_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"^--ui-host: \"0.0.0.0\" is reachable from other machines"):
        from_flags("m", (), flags(camera=(0,), capture_dir="c", ui_port=8090, ui_dataset="d", ui_host="0.0.0.0"))
    monkeypatch.setenv("EDGEPORT_UI_TOKEN", TOKEN)
    assert from_flags("m", (), flags(camera=(0,), capture_dir="c", ui_port=8090, ui_dataset="d", ui_host="0.0.0.0")).ui.token == TOKEN


# Home Assistant's MQTT sensor discovery schema (homeassistant/components/mqtt/sensor.py PLATFORM_SCHEMA_MODERN with
# the entity base schema, abbreviations expanded; https://www.home-assistant.io/integrations/sensor.mqtt/), as far as
# a payload of ours could use it: key → check. The discovery topic is <prefix>/<component>/[<node_id>/]<object_id>/config.
_TEXT = lambda v: isinstance(v, str) and v != ""  # noqa: E731
HA_SENSOR_SCHEMA = {
    "state_topic": _TEXT, "name": lambda v: v is None or isinstance(v, str), "unique_id": _TEXT,
    "value_template": _TEXT, "availability_topic": _TEXT, "payload_available": _TEXT, "payload_not_available": _TEXT,
    "unit_of_measurement": _TEXT, "state_class": lambda v: v in ("measurement", "measurement_angle", "total", "total_increasing"),
    "device_class": _TEXT, "icon": lambda v: isinstance(v, str) and v.startswith("mdi:"), "expire_after": lambda v: isinstance(v, int),
    "force_update": lambda v: isinstance(v, bool), "json_attributes_topic": _TEXT, "json_attributes_template": _TEXT,
    "qos": lambda v: v in (0, 1, 2), "enabled_by_default": lambda v: isinstance(v, bool), "entity_category": lambda v: v in ("config", "diagnostic"),
    "suggested_display_precision": lambda v: isinstance(v, int), "encoding": lambda v: isinstance(v, str),
    "origin": lambda v: isinstance(v, dict) and _TEXT(v.get("name")) and set(v) <= {"name", "sw_version", "support_url"},
    "device": lambda v: isinstance(v, dict) and (v.get("identifiers") or v.get("connections")) and set(v) <= {
        "identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version", "hw_version", "serial_number",
        "via_device", "configuration_url", "suggested_area"} and all(_TEXT(i) for i in v.get("identifiers", [])),
}
HA_REQUIRED = ("name", "unique_id", "state_topic", "availability_topic", "device")  # what the issue asks of every payload
_HA_TOPIC = re.compile(r"^homeassistant/sensor/(?:([A-Za-z0-9_-]+)/)?([A-Za-z0-9_-]+)/config$")


def test_home_assistant_discovery_from_a_real_broker_matches_the_sensor_schema(bundle, tmp_path):
    broker = Broker(tmp_path / "broker").start()
    try:
        video = colour_video(tmp_path / "v.avi", ["red", "green"] * 30)
        proc = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", video, "--name", f"door={video}",
                               "--max-fps", "20", "--mqtt", f"{broker.url}/site", "--ha-discovery", "--output-format", "jsonl"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        sub = Subscriber(broker, "#", client_id="ha")  # afterwards: what HA finds is what was retained
        assert sub.wait(lambda: len([m for m in sub.messages if m[0].endswith("/config")]) >= 3
                        and any(t == "site/door/stats" for t, _, _ in sub.messages), 10), sub.messages
        sub.close()
    finally:
        broker.stop()
    configs = {t: json.loads(p) for t, p, retained in sub.messages if t.startswith("homeassistant/") and retained}
    assert sorted(configs) == [f"homeassistant/sensor/{node}_door/{kind}/config"
                               for node in [next(iter(configs)).split("/")[2].rsplit("_door", 1)[0]]
                               for kind in ("fps", "label", "state")]
    for topic, payload in configs.items():
        assert _HA_TOPIC.match(topic), topic
        assert all(key in payload for key in HA_REQUIRED), (topic, payload)
        unknown = set(payload) - set(HA_SENSOR_SCHEMA)
        assert not unknown, f"{topic}: keys HA's sensor schema does not have: {unknown}"
        bad = [key for key, value in payload.items() if not HA_SENSOR_SCHEMA[key](value)]
        assert not bad, f"{topic}: values HA would refuse: {bad}"
        assert payload["availability_topic"] == "site/status"
    by_kind = {t.split("/")[-2]: p for t, p in configs.items()}
    assert by_kind["state"]["state_topic"] == "site/door/state" and "value_json.label" in by_kind["state"]["value_template"]
    assert by_kind["label"]["state_topic"] == "site/door" and by_kind["fps"]["state_topic"] == "site/door/stats"
    assert len({p["unique_id"] for p in configs.values()}) == 3
    stats = json.loads(next(p for t, p, r in sub.messages if t == "site/door/stats" and r))
    assert stats["frames"] == 60 and stats["fps"] > 0  # the last stats before offline: every frame counted
    assert ("site/status", "offline", True) in sub.messages


V2_CLASSES = ("crimson", "green", "blue", "grey")  # "red" gone, two new


class ReloadingBox:
    """A real ``edge-predict serve --reload`` over a watched folder, its MODEL a symlink to the colour bundle v1
    (red, green, blue) and then to v2 (``V2_CLASSES``), both with a conformance kit; capture and the page on."""

    def __init__(self, root: Path):
        self.root, self.port, self.records = root, free_port(), []
        self.v2 = colour_bundle_with_kit(root / "v2", labels=V2_CLASSES)
        self.current, self.inbox, self.dropped = root / "current", root / "inbox", 0
        self.current.symlink_to(colour_bundle_with_kit(root / "v1"))
        self.inbox.mkdir()
        self.proc = subprocess.Popen(
            [str(c) for c in (BIN / "edge-predict", "serve", self.current, "--reload", "--reload-interval", "0.2",
                              "--watch", self.inbox, "--name", f"door={self.inbox}", "--capture", root / "captures",
                              "--capture-below", "0.99", "--capture-rate", "600", "--ui-port", self.port,
                              "--ui-dataset", root / "dataset", "--output-format", "jsonl", "--threads", "1")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.records.append(json.loads(line))

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status", timeout=5) as answer:
            return json.loads(answer.read())

    def drop_grey(self) -> None:
        """One grey frame into the watched folder (renamed in whole): the colour models are unsure of it."""
        staged = self.root / f"grey{self.dropped}.jpg"
        staged.write_bytes(solid_jpeg(GREY))
        os.replace(staged, self.inbox / staged.name)
        self.dropped += 1

    def wait_for_captures(self, n: int) -> dict:
        """Drop grey frames until the page lists ``n`` captures."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                status = self.status()
            except OSError:
                time.sleep(0.2)  # the page not up yet
                continue
            if len(status["captures"]) >= n:
                return status
            self.drop_grey()  # once the page is up, so the watch (new files only) is up too
            time.sleep(0.5)
        raise AssertionError(f"fewer than {n} captures in 60 s")

    def switch_to_v2(self) -> dict:
        """Point MODEL at v2 atomically and feed frames until the service swaps; the model_swap record."""
        staged = self.root / "current.new"
        staged.symlink_to(self.v2)
        os.replace(staged, self.current)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = [r for r in self.records if "event" in r and r["event"].startswith("model_")]
            if events:
                assert events[0]["event"] == "model_swap", events
                return events[0]
            self.drop_grey()  # the swap happens between two frames
            time.sleep(0.3)
        raise AssertionError(f"no model_swap in 60 s: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@contextmanager
def reloading_box(root: Path) -> Iterator[ReloadingBox]:
    box = ReloadingBox(root)
    try:
        yield box
    finally:
        box.stop()


def test_after_a_hot_reload_the_page_offers_the_classes_of_the_model_now_serving(tmp_path):
    with reloading_box(tmp_path) as box:
        before = box.wait_for_captures(1)
        assert before["classes"] == ["red", "green", "blue"] and "grey" not in before["counts"]
        swap = box.switch_to_v2()
        assert swap["new"]["sha256"] != swap["old"]["sha256"]
        status = box.status()
        assert status["classes"] == list(V2_CLASSES)
        assert list(status["counts"]) == [*V2_CLASSES, "unknown", "delete"]
        status_code, page, _ = _ask(box.port, "GET", "/", token=None)
        assert status_code == 200 and b'data-label="grey"' in page and b'data-label="red"' not in page
        capture = status["captures"][-1]  # the oldest: captured by v1, labelled with v2's classes
        assert _label(box.port, "door", capture["name"], "red", token=None)[0] == 400  # v1's class, gone now
        assert not (tmp_path / "dataset").exists()
        status_code, data, _ = _label(box.port, "door", capture["name"], "grey", token=None)
        assert status_code == 200 and json.loads(data)["counts"]["grey"] == 1
    assert (tmp_path / "dataset" / "grey" / f"door_{capture['name']}").is_file()
    with open(tmp_path / "dataset" / "labels.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["path", "label"], [f"grey/door_{capture['name']}", "grey"]]
