"""The camera box's TOML config (``edge-predict serve --config``): the example loads into the expected dataclasses,
and each kind of bad input is a ConfigError naming the file, the line and the key; credentials never show."""

from __future__ import annotations

import re
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from edgeport.runtime.errors import ConfigError, ExitCode, UsageError, exit_code_for
from edgeport.runtime.service.config import (
    CaptureConfig,
    HealthConfig,
    HomeAssistantConfig,
    ModelOptions,
    MqttConfig,
    OutputConfig,
    ReconnectConfig,
    ServiceConfig,
    SourceConfig,
    UiConfig,
    config_from_flags,
    load_config,
)
from edgeport.runtime.service.config_lines import KeyLines
from edgeport.runtime.stream import Region

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "box.example.toml"
DOOR_URL = "rtsp://viewer:door-secret@10.0.0.7:554/stream1"
YARD_URL = "rtsp://admin:yard-secret@10.0.0.8:554/stream1"
PASSWORD = "mqtt-hunter2"
MINIMAL = '[sources.door]\ncamera = 0\n'


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("EDGEPORT_DOOR_URL", DOOR_URL)
    monkeypatch.setenv("EDGEPORT_MQTT_PASSWORD", PASSWORD)
    return monkeypatch


def write(folder: Path, text: str, name: str = "box.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """The 1-based line where the first ``needle`` ends (a needle may span lines: "[sources.b]\\nwatch")."""
    return text[:text.index(needle) + len(needle)].count("\n") + 1


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_the_example_loads_into_the_expected_dataclasses(tmp_path, env):
    path = tmp_path / "box.toml"
    shutil.copy(EXAMPLE, path)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "yard.url").write_text(YARD_URL + "\n")
    config = load_config(path)
    assert config.model == "/srv/model/current"
    assert config.model_options == ModelOptions(threads=2, verify_key=str(tmp_path / "release.pub.pem"), reload=True,
                                                reload_interval=5.0)
    assert config.output == OutputConfig(format="jsonl", top_k=3, threshold=0.4, batch="auto")
    assert config.mqtt == MqttConfig("mqtts://broker.local/site1/edge", qos=1, ca=str(tmp_path / "broker-ca.pem"),
                                     queue=10_000, username="edge", password=PASSWORD)
    assert config.health == HealthConfig(9108, "0.0.0.0", 30.0)
    assert config.capture == CaptureConfig("/var/lib/edgeport/captures", 0.6, 0.15, 6.0, 500.0)
    assert config.reconnect == ReconnectConfig(30.0) and config.reconnect_max == 30.0
    assert config.ui == UiConfig(8090, "/var/lib/edgeport/reviewed") and config.ui.token is None
    assert config.homeassistant == HomeAssistantConfig("homeassistant", "gatehouse", 5.0)
    assert config.sources == (
        SourceConfig("door", "url", DOOR_URL, max_fps=5.0, regions=(
            Region("garage", (0.0, 0.0, 0.5, 1.0)), Region("drive", (640, 0, 1280, 720), pixels=True)),
            smoothing="ema", window=3, hold=3),
        SourceConfig("yard", "url", YARD_URL, every=2, max_fps=5.0),
        SourceConfig("bench", "camera", 0, max_fps=2.0),
        SourceConfig("inbox", "watch", "/srv/inbox"),
    )
    assert config.model_options.classifier_kwargs() == {
        "backend": "auto", "format": None, "threads": 2, "exact_preprocess": False, "max_pixels": 40_000_000,
        "verify_key": str(tmp_path / "release.pub.pem"), "unknown": True, "unknown_below": None}
    for shown in (repr(config), config.describe()):  # credentials never show, the rest does
        assert PASSWORD not in shown and "door-secret" not in shown and "yard-secret" not in shown
        assert "rtsp://***@10.0.0.7:554/stream1" in shown and "inbox" in shown
    with pytest.raises(FrozenInstanceError):
        config.model = "other"  # type: ignore[misc]
    assert config.with_model("/other").model == "/other" and config.model == "/srv/model/current"


def test_defaults_mirror_the_command_line(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config == ServiceConfig((SourceConfig("door", "camera", 0),))
    assert config.model is None and config.mqtt is None and config.health is None and config.capture is None
    assert config.output == OutputConfig("table", 5, None, "auto")
    assert config.reconnect_max == 30.0 and config.sources[0].every == 1
    assert MqttConfig("mqtt://b/p").qos == 1 and MqttConfig("mqtt://b/p").queue == 10_000
    assert HealthConfig(9108).host == "127.0.0.1" and HealthConfig(9108).max_age == 30.0
    assert CaptureConfig("c") == CaptureConfig("c", 0.5, None, 6.0, 500.0)


def test_relative_paths_resolve_against_the_file_folder(tmp_path, monkeypatch):
    box = tmp_path / "etc"
    box.mkdir()
    (box / "mqtt.password").write_text(PASSWORD + "\n")
    write(box, 'model = "bundle"\nverify_key = "keys/release.pem"\n'
                      '[mqtt]\nurl = "mqtts://broker/site"\nusername = "edge"\nca = "ca.pem"\npassword_file = "mqtt.password"\n'
                      '[capture]\ndir = "captures"\n'
                      '[sources.clip]\nvideo = "clips/a.mp4"\n[sources.inbox]\nwatch = "../inbox"\n'
                      '[sources.stills]\nfiles = ["a.jpg", "more/", "/abs/b.jpg"]\n[sources.cam]\nurl = "rtsp://cam/1"\n')
    monkeypatch.chdir(tmp_path)  # another working directory: nothing may resolve against it
    config = load_config("etc/box.toml")
    assert config.model == str(box / "bundle") and config.model_options.verify_key == str(box / "keys" / "release.pem")
    assert config.mqtt.ca == str(box / "ca.pem") and config.mqtt.password == PASSWORD
    assert config.capture.dir == str(box / "captures")
    assert [s.target for s in config.sources] == [str(box / "clips" / "a.mp4"), str(box / ".." / "inbox"),
                                                  (str(box / "a.jpg"), str(box / "more"), "/abs/b.jpg"), "rtsp://cam/1"]


BAD = [  # (what, file text, the line's text, what the message names)
    ("unknown key in a source", MINIMAL + "evry = 2\n", "evry", "[sources.door] evry: unknown key"),
    ("unknown top-level table", MINIMAL + "[mqqt]\nurl = 'mqtt://b/p'\n", "[mqqt]", "[mqqt]: unknown table"),
    ("unknown top-level key", 'modle = "m"\n' + MINIMAL, "modle", "modle: unknown key"),
    ("unknown nested table", MINIMAL + "[sources.door.zones]\nx = 1\n", "zones", "[sources.door.zones]: unknown table"),
    ("bool is not an int", MINIMAL + "every = true\n", "every", "[sources.door] every: must be a whole number ≥ 1, got true"),
    ("text is not a number", 'threads = "2"\n' + MINIMAL, "threads", 'threads: must be a whole number ≥ 1, got "2"'),
    ("float is not an int", MINIMAL + "every = 2.5\n", "every", "every: must be a whole number ≥ 1, got 2.5"),
    ("range", MINIMAL + "every = 0\n", "every", "[sources.door] every: must be a whole number ≥ 1, got 0"),
    ("qos range", MINIMAL + "[mqtt]\nurl = 'mqtt://b/p'\nqos = 3\n", "qos", "[mqtt] qos: must be a whole number from 0 to 2, got 3"),
    ("choice", MINIMAL + "[output]\nformat = 'json'\n", "format", '[output] format: must be "jsonl" or "csv" or "table"'),
    ("backend", 'backend = "tensorrt"\n' + MINIMAL, "backend", '"onnxruntime" or "openvino", got "tensorrt"'),
    ("batch", MINIMAL + "[output]\nbatch = 'max'\n", "batch", '[output] batch: must be "auto" or a whole number ≥ 1, got "max"'),
    ("reconnect", MINIMAL + "[reconnect]\nmax = 0\n", "max", "[reconnect] max: must be a number ≥ 0.01, got 0"),
    ("a table given as a key", 'output = "jsonl"\n' + MINIMAL, "output", "output: must be a table, [output]"),
    ("a missing required key", MINIMAL + "[health]\nhost = '0.0.0.0'\n", "[health]", "[health]: needs port = …"),
    ("two kinds in one source", "[sources.door]\ncamera = 0\nurl = 'rtsp://cam/1'\n", "url",
     "[sources.door] url: needs exactly one of camera, url, url_env, url_file, video, watch, files; it has camera and url"),
    ("no kind in a source", "[sources.door]\nevery = 2\n", "[sources.door]", "[sources.door]: needs exactly one of"),
    ("a bad id", '[sources."front door"]\ncamera = 0\n', "front door", "[sources.\"front door\"]: source id 'front door': use"),
    ("a reserved id", "[sources.status]\ncamera = 0\n", "status", "source id 'status'"),
    ("a stream as video", "[sources.door]\nvideo = 'rtsp://cam/1'\n", "video", 'video: is a stream URL: write url = "rtsp://cam/1"'),
    ("a url without scheme", "[sources.door]\nurl = 'cam/1'\n", "url", "url: must be a stream URL with its scheme"),
    ("every on a folder", "[sources.inbox]\nwatch = 'in'\nevery = 2\n", "every", "every: is for camera, url, video sources, not watch"),
    ("max_files on a camera", MINIMAL + "max_files = 2\n", "max_files", "max_files: is for watch sources, not camera"),
    ("empty files", "[sources.s]\nfiles = []\n", "files", "files: must be a non-empty list of paths"),
    ("ca without TLS", MINIMAL + "[mqtt]\nurl = 'mqtt://b/p'\nca = 'ca.pem'\n", "ca =", "[mqtt] ca: is for TLS"),
    ("a broker url that is no text", MINIMAL + "[mqtt]\nurl = 5\n", "url", "[mqtt] url: must be non-empty text, got 5"),
    ("a bad broker url", MINIMAL + "[mqtt]\nurl = 'http://b/p'\n", "url", "[mqtt] url: 'http://b/p': write mqtt://"),
    ("same camera twice", MINIMAL + "[sources.porch]\ncamera = 0\n", "porch]\ncamera", "sources 'door' and 'porch' both read camera 0"),
    ("same folder twice", "[sources.a]\nwatch = 'in'\n[sources.b]\nwatch = './in/'\n", "b]\nwatch", "sources 'a' and 'b' both read"),
    ("both password keys", MINIMAL + "[mqtt]\nurl = 'mqtt://b/p'\nusername = 'u'\npassword_file = 'p'\npassword_env = 'P'\n",
     "password_env", "[mqtt] password_env: give password_file or password_env, not both"),
    ("a missing variable", MINIMAL + "[mqtt]\nurl = 'mqtt://b/p'\nusername = 'u'\npassword_env = 'EDGEPORT_TEST_UNSET'\n",
     "password_env", "[mqtt] password_env: the environment variable EDGEPORT_TEST_UNSET is not set"),
    ("a missing url variable", "[sources.door]\nurl_env = 'EDGEPORT_TEST_UNSET'\n", "url_env",
     "[sources.door] url_env: the environment variable EDGEPORT_TEST_UNSET is not set"),
    ("a missing url file", "[sources.door]\nurl_file = 'nope.url'\n", "url_file", "[sources.door] url_file: cannot read"),
    ("an unknown threshold as text", "unknown_below = 'low'\n" + MINIMAL, "unknown_below",
     "unknown_below: must be a finite number"),
    ("unknown as a number", "unknown = 1\n" + MINIMAL, "unknown =", "unknown: must be true or false"),
    ("a password without a user", MINIMAL + "[mqtt]\nurl = 'mqtt://b/p'\npassword_env = 'EDGEPORT_TEST_SET'\n",
     "password_env", "[mqtt] password_env: needs a username"),
]


@pytest.mark.parametrize("what, text, needle, expected", BAD, ids=[case[0] for case in BAD])
def test_each_bad_input_names_the_file_line_and_key(tmp_path, monkeypatch, what, text, needle, expected):
    monkeypatch.delenv("EDGEPORT_TEST_UNSET", raising=False)
    monkeypatch.setenv("EDGEPORT_TEST_SET", PASSWORD)
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, needle)}: "), message
    assert expected in message
    assert PASSWORD not in message


def test_unknown_keys_list_the_allowed_ones_and_never_echo_the_value(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + "[mqtt]\nurl = 'mqtt://b/p'\npassword = 'plain-secret'\n"))
    assert "[mqtt] password: unknown key; [mqtt] has the keys url, qos, ca, queue, username, password_file, " \
           "password_env (no tables)" in message
    assert "plain-secret" not in message
    message = error_of(write(tmp_path, MINIMAL + "[sources.door.x]\n"))
    assert "every, max_fps, watch_timeout, max_files" in message
    message = error_of(write(tmp_path, "[mqqt]\n" + MINIMAL))
    assert "the tables [sources.<id>], [output], [mqtt], [health], [capture], [reconnect]" in message


def test_no_source(tmp_path):
    message = error_of(write(tmp_path, 'model = "m"\n'))
    assert message == f"{tmp_path / 'box.toml'}: [sources]: no source: add a [sources.<id>] table with one of camera, " \
                      "url, video, watch, files"
    assert error_of(write(tmp_path, 'model = "m"\n\n[sources]\n')).startswith(f"{tmp_path / 'box.toml'}:3: [sources]")
    assert "sources: must be [sources.<id>] tables" in error_of(write(tmp_path, 'sources = ["cam"]\n'))


def test_a_toml_syntax_error_keeps_tomllib_line_and_column(tmp_path):
    path = write(tmp_path, MINIMAL + "every = \n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: not valid TOML: ") and "line 3, column" in message
    duplicate = error_of(write(tmp_path, MINIMAL + MINIMAL))  # ids are unique by construction
    assert "not valid TOML" in duplicate and ":3:" in duplicate
    assert "cannot read the config file" in error_of(tmp_path / "missing.toml")
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n" + MINIMAL.encode())
    assert "cannot read the config file" in error_of(tmp_path / "latin1.toml")


def test_passwords_never_show(tmp_path, env):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    text = MINIMAL + "[mqtt]\nurl = 'mqtts://broker/site'\nusername = 'edge'\npassword_file = 'pw'\nqos = 5\n"
    message = error_of(write(tmp_path, text))  # an error after the password was read
    assert "[mqtt] qos" in message and PASSWORD not in message
    config = load_config(write(tmp_path, text.replace("qos = 5", "qos = 0")))
    assert config.mqtt.password == PASSWORD  # read without its newline
    assert PASSWORD not in repr(config) and PASSWORD not in repr(config.mqtt) and PASSWORD not in config.describe()
    in_url = MqttConfig("mqtt://edge:url-secret@broker/site")
    assert "url-secret" not in repr(in_url) and "mqtt://***@broker/site" in repr(in_url)
    source = SourceConfig("door", "url", DOOR_URL)
    assert "door-secret" not in repr(source) and "door-secret" not in source.shown
    message = error_of(write(tmp_path, "[sources.a]\nurl_env = 'EDGEPORT_DOOR_URL'\n[sources.b]\nurl = '" + DOOR_URL + "'\n"))
    assert "both read url rtsp://***@10.0.0.7:554/stream1" in message and "door-secret" not in message
    env.setenv("EDGEPORT_DOOR_URL", "viewer:door-secret@10.0.0.7/stream1")  # no scheme: never echoed
    message = error_of(write(tmp_path, "[sources.door]\nurl_env = 'EDGEPORT_DOOR_URL'\n"))
    assert "[sources.door] url_env: must be a stream URL" in message and "door-secret" not in message
    message = error_of(write(tmp_path, MINIMAL + "[mqtt]\nurl = 'mqtt://edge:url-secret@broker/site'\npassword_env = "
                                                 "'EDGEPORT_MQTT_PASSWORD'\n"))
    assert "password_env: the url has a password too" in message and "url-secret" not in message


def test_the_dataclasses_validate_themselves_without_a_file():
    with pytest.raises(ConfigError, match=r"^\[sources.door\] camera: must be a whole number ≥ 0, got true$"):
        SourceConfig("door", "camera", True)
    with pytest.raises(ConfigError, match="kind: must be"):
        SourceConfig("door", "rtsp", "x")
    with pytest.raises(ConfigError, match="no source"):
        ServiceConfig(())
    with pytest.raises(ConfigError, match="source id 'door' is given twice"):
        ServiceConfig((SourceConfig("door", "camera", 0), SourceConfig("door", "camera", 1)))
    with pytest.raises(ConfigError, match="max_age: must be a number > 0, got 0"):
        HealthConfig(9108, max_age=0)
    with pytest.raises(ConfigError, match="model_format: must be"):
        ModelOptions(model_format="tflite")
    assert SourceConfig("s", "files", ["a.jpg"]).target == ("a.jpg",)  # normalised: hashable, frozen
    assert isinstance(ConfigError("x"), UsageError) and exit_code_for(ConfigError("x")) == ("usage", ExitCode.USAGE)


def flags(**given) -> dict:
    params = {"video": (), "camera": (), "watch": (), "every": 1, "max_fps": None, "watch_timeout": None, "max_files": None,
              "names": (), "reconnect": False, "reconnect_max": 30.0, "mqtt_url": None, "mqtt_qos": 1, "mqtt_ca": None,
              "mqtt_queue": 10_000, "health_port": None, "health_host": "127.0.0.1", "health_max_age": 30.0,
              "capture_dir": None, "capture_below": 0.5, "capture_margin": None, "capture_rate": 6.0, "capture_max_mb": 500.0,
              "top_k": 5, "threshold": None, "fmt": "table", "batch": "auto", "backend": "auto", "model_format": None,
              "threads": None, "exact_preprocess": False, "max_pixels": 40_000_000, "verify_key": None, "hot_reload": False,
              "reload_interval": 1.0, "no_unknown": False, "unknown_below": None, "debug": False, "regions": (),
              "smoothing": None, "window": None, "hold": None, "ui_port": None, "ui_host": "127.0.0.1", "ui_dataset": None,
              "ha_discovery": False}
    return {**params, **given}


def test_flags_build_the_same_config(tmp_path):
    config = config_from_flags("m", ("a.jpg",), flags(camera=(0,), video=("clip.mp4", "rtsp://cam/1"), watch=("in",),
                                                      names=("yard=rtsp://cam/1",), every=2, max_files=3,
                                                      mqtt_url="mqtt://b/p", health_port=9108, capture_dir="c",
                                                      hot_reload=True))
    assert config.sources == (SourceConfig("files1", "files", ("a.jpg",)), SourceConfig("camera1", "camera", 0, every=2),
                              SourceConfig("video1", "video", "clip.mp4", every=2),
                              SourceConfig("yard", "url", "rtsp://cam/1", every=2), SourceConfig("watch1", "watch", "in", max_files=3))
    assert config.mqtt == MqttConfig("mqtt://b/p") and config.health == HealthConfig(9108) and config.capture == CaptureConfig("c")
    assert config.model == "m" and config.model_options.reload
    assert config.model_options.classifier_kwargs()["unknown"] and config.model_options.unknown_below is None
    own = config_from_flags("m", ("a.jpg",), flags(no_unknown=True, unknown_below=-3.5)).model_options
    assert (own.unknown, own.unknown_below) == (False, -3.5)
    assert load_config(write(tmp_path, "unknown_below = -3.5\nunknown = false\n" + MINIMAL)).model_options == \
        ModelOptions(unknown=False, unknown_below=-3.5)
    with pytest.raises(ConfigError, match=r"^--mqtt: 'http://b/p': write mqtt://"):
        config_from_flags("m", (), flags(camera=(0,), mqtt_url="http://b/p"))
    with pytest.raises(ConfigError, match=r"^--mqtt-ca: is for TLS"):
        config_from_flags("m", (), flags(camera=(0,), mqtt_url="mqtt://b/p", mqtt_ca="ca.pem"))
    with pytest.raises(ConfigError, match=r"^--camera 0 is given twice"):
        config_from_flags("m", (), flags(camera=(0, 0)))
    with pytest.raises(ConfigError, match=r"^--video: sources 'video1' and 'video2' both read video \./clip.mp4"):
        config_from_flags("m", (), flags(video=("clip.mp4", "./clip.mp4")))
    with pytest.raises(ConfigError, match="give INPUTS, --video, --camera or --watch"):
        config_from_flags("m", (), flags())


SCANNED = '''\
# a comment with [fake.table] and key = 1
model = "m"   # trailing [comment]
"quoted key" = 1
notes = """
[not.a.table]
every = 0
"""
raw = \'\'\'
[not.either]
\'\'\'
list = [
  "a]",   # a bracket in a string
  [1, 2],
]
[ sources . "front door" ]
camera = 0
inline = { every = 2, max_fps = 1 }
site.level = 3
[sources.'yard']\r
url = "rtsp://x"\r
[[many]]
x = 1
[[many]]
x = 2
'''


def test_the_line_scanner():
    lines = KeyLines(SCANNED)
    assert lines.line((), "model") == 2 and lines.line((), "quoted key") == 3 and lines.line((), "notes") == 4
    assert lines.line((), "raw") == 8 and lines.line((), "list") == 11
    assert lines.line(("not", "a", "table"), None) is None and lines.line((), "every") is None
    assert lines.line(("sources", "front door"), None) == 15 and lines.line(("sources", "front door"), "camera") == 16
    assert lines.line(("sources", "front door", "inline"), "every") == 17  # inside an inline table: its line
    assert lines.line(("sources", "front door", "site"), "level") == 18 and lines.line(("sources", "front door", "site"), None) == 18
    assert lines.line(("sources", "yard"), "url") == 20 and lines.line(("sources", "yard"), "every") == 19  # the table's line
    assert lines.line(("sources",), None) == 15  # a table only implied by its sub-tables
    assert lines.line(("many",), "x") == 22
    assert lines.line(("nowhere",), "x") is None


@pytest.mark.parametrize("text", ["[", "[[", "a = '''", 'a = """\\', "[a.\"b", "= 1", "a.=1", "[sources.\"\\U0001F600\"]",
                                  "x = [[[[", "x = }}}", "\r\n\r\n", "a = 'b", "\ufeff[a]"])
def test_the_line_scanner_never_crashes(text):
    KeyLines(text).line(("a",), "b")


def test_the_line_scanner_agrees_with_every_key_of_the_example():
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = KeyLines(text)
    for number, line in enumerate(text.split("\n"), 1):
        if match := re.match(r"^(\w+) = ", line):
            table = next((re.match(r"\[(.*)\]", h)[1] for h in reversed(text.split("\n")[:number]) if h.startswith("[")), "")
            assert lines.line(tuple(table.split(".")) if table else (), match[1]) == number, line
