"""The camera box's config: one TOML file (``edge-predict serve --config box.toml``, docs/box.example.toml), or the
flags of ``edge-predict serve MODEL --video a --video b …``; both build the same frozen dataclasses.

Every dataclass validates itself in ``__post_init__``, so a config built from flags or in Python is checked exactly
like one read from a file. ``load_config`` adds what only a file has: the file name and line of each error, unknown
keys and tables as errors (a misspelt key is never ignored), and paths relative to the file's own folder. Credentials
stay out of argv and the file (``url_env``/``url_file``, ``password_env``/``password_file``); once resolved they are
kept in the config but never shown by ``repr()``, ``describe()`` or an error.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..backends import backend_names
from ..errors import ConfigError, UsageError
from ..formats import format_names
from ..frames import is_url
from ..preprocess import DEFAULT_MAX_PIXELS
from ..records import OUTPUT_FORMATS
from ..redact import redact_url
from ..stream import DEFAULT_SMOOTHING, SMOOTHERS, Region, Smoothing, check_id, parse_names
from .config_lines import KeyLines, Where
from .mqtt import DEFAULT_QUEUE, parse_mqtt_url

__all__ = ["ServiceConfig", "SourceConfig", "ModelOptions", "OutputConfig", "MqttConfig", "HealthConfig", "CaptureConfig",
           "ReconnectConfig", "UiConfig", "HomeAssistantConfig", "SOURCE_KINDS", "UI_TOKEN_ENV", "load_config",
           "config_from_flags"]

#: What a source reads; a source table has exactly one of these keys (``url`` also as ``url_env`` / ``url_file``).
SOURCE_KINDS = ("camera", "url", "video", "watch", "files")
_FRAME_KINDS = ("camera", "url", "video")  # the kinds that have frames to skip (``every``)
#: The review page's token for the flags form (the file names its own: ``[ui] token_env`` / ``token_file``).
UI_TOKEN_ENV = "EDGEPORT_UI_TOKEN"


class _Invalid(ConfigError):
    """A ConfigError that knows its table and key, so that ``load_config`` can add the line they are on."""

    def __init__(self, where: Where, key: str | None, problem: str):
        name = _name(where, key)
        super().__init__(f"{name}: {problem}" if name else problem)
        self.where, self.key, self.problem = where, key, problem


def _name(where: Where, key: str | None = None) -> str:
    """``[sources.door] every``, ``[sources."front door"]``, ``threads`` (a top-level key)."""
    parts = [p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in where]
    return " ".join(([f"[{'.'.join(parts)}]"] if parts else []) + ([key] if key else []))


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(redact_url(value) if len(value) <= 80 else redact_url(value)[:77] + "…")
    return {list: "a list", tuple: "a list", dict: "a table"}.get(type(value), repr(value))


def _whole(where: Where, key: str, value: Any, low: int, high: int | None = None, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"≥ {low}" if high is None else f"from {low} to {high}"
        raise _Invalid(where, key, f"must be a whole number {span}, got {_got(value)}")
    return value


def _number(where: Where, key: str, value: Any, low: float, *, above: bool = False, high: float | None = None,
            optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or (value <= low if above else value < low) or (high is not None and value > high)):
        span = f"from {low:g} to {high:g}" if high is not None else f"{'>' if above else '≥'} {low:g}"
        raise _Invalid(where, key, f"must be a number {span}, got {_got(value)}")
    return float(value)


def _text(where: Where, key: str, value: Any, optional: bool = False, choices: Sequence[str] = ()) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or (choices and value not in choices):
        raise _Invalid(where, key, f"must be {' or '.join(map(json.dumps, choices)) if choices else 'non-empty text'}, "
                               f"got {_got(value)}")
    return value


def _flag(where: Where, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(where, key, f"must be true or false, got {_got(value)}")
    return value


def _set(obj: object, **values: Any) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)  # frozen: __post_init__ stores the normalised values


def _items(obj: Any) -> list[tuple[str, Any]]:
    """The fields that may be shown, a URL without its user info; a password (``repr=False``) is left out."""
    return [(f.name, redact_url(v) if f.name in ("url", "target") and isinstance(v, str) else v)
            for f in fields(obj) if f.repr for v in [getattr(obj, f.name)]]


class _Shown:
    """``repr()`` without credentials, for the config dataclasses that hold some (``repr=False`` on the dataclass)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in _items(self))})"


@dataclass(frozen=True)
class ModelOptions:
    """How the model is loaded and hot-reloaded: the file's top-level keys (``edge-predict classify``'s flags)."""

    backend: str = "auto"
    model_format: str | None = None
    threads: int | None = None
    exact_preprocess: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    verify_key: str | None = None  # None: the classifier reads $EDGEPORT_VERIFY_KEY itself
    reload: bool = False
    reload_interval: float = 1.0
    unknown: bool = True  # false: never call a frame unknown, whatever the model's rule
    unknown_below: float | None = None  # overrides the model's "unknown" threshold

    def __post_init__(self) -> None:
        _text((), "backend", self.backend, choices=("auto", *backend_names()))
        _flag((), "unknown", self.unknown)
        if self.unknown_below is not None and (isinstance(self.unknown_below, bool) or not isinstance(
                self.unknown_below, (int, float)) or not math.isfinite(self.unknown_below)):
            raise _Invalid((), "unknown_below", f"must be a finite number (on the model's score scale), got "
                                                f"{_got(self.unknown_below)}")
        _text((), "model_format", self.model_format, optional=True, choices=format_names())
        _whole((), "threads", self.threads, 1, optional=True)
        _flag((), "exact_preprocess", self.exact_preprocess)
        _whole((), "max_pixels", self.max_pixels, 1)
        _text((), "verify_key", self.verify_key, optional=True)
        _flag((), "reload", self.reload)
        _set(self, reload_interval=_number((), "reload_interval", self.reload_interval, 0.05))

    def classifier_kwargs(self) -> dict[str, Any]:
        """The ``Classifier`` keywords these options set."""
        return {"backend": self.backend, "format": self.model_format, "threads": self.threads,
                "exact_preprocess": self.exact_preprocess, "max_pixels": self.max_pixels, "verify_key": self.verify_key,
                "unknown": self.unknown, "unknown_below": self.unknown_below}


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: how records are printed, how many classes each has, and how frames are batched."""

    TABLE: ClassVar[Where] = ("output",)
    format: str = "table"
    top_k: int = 5
    threshold: float | None = None
    batch: int | str = "auto"  # "auto": up to one frame of each ready source per inference call

    def __post_init__(self) -> None:
        _text(self.TABLE, "format", self.format, choices=OUTPUT_FORMATS)
        _whole(self.TABLE, "top_k", self.top_k, 1)
        _set(self, threshold=_number(self.TABLE, "threshold", self.threshold, 0, high=1, optional=True))
        if self.batch != "auto" and (isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1):
            raise _Invalid(self.TABLE, "batch", f'must be "auto" or a whole number ≥ 1, got {_got(self.batch)}')


@dataclass(frozen=True, repr=False)
class MqttConfig(_Shown):
    """``[mqtt]``: the broker. ``password`` comes from ``password_file`` or ``password_env`` and is never shown."""

    TABLE: ClassVar[Where] = ("mqtt",)
    SECRET: ClassVar[str] = "password"  # read from password_file / password_env, never written in the file
    url: str
    qos: int = 1
    ca: str | None = None
    queue: int = DEFAULT_QUEUE
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            target = parse_mqtt_url(_text(self.TABLE, "url", self.url) or "")
        except _Invalid:
            raise
        except UsageError as exc:  # its message names --mqtt; here the key is named before it
            raise _Invalid(self.TABLE, "url", str(exc).removeprefix("--mqtt ")) from None
        _whole(self.TABLE, "qos", self.qos, 0, 2)
        if _text(self.TABLE, "ca", self.ca, optional=True) and not target.tls:
            raise _Invalid(self.TABLE, "ca", "is for TLS: use an mqtts:// url")
        _whole(self.TABLE, "queue", self.queue, 1)
        _text(self.TABLE, "username", self.username, optional=True)
        if self.password is not None:
            if not isinstance(self.password, str) or not self.password:
                raise _Invalid(self.TABLE, "password", "must be non-empty text")
            if target.password is not None:
                raise _Invalid(self.TABLE, "password", "the url has a password too: keep one, out of the url")
            if self.username is None and target.username is None:
                raise _Invalid(self.TABLE, "password", "needs a username (username = \"…\", or user@ in the url)")


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``: /healthz and /metrics on ``host:port``."""

    TABLE: ClassVar[Where] = ("health",)
    port: int
    host: str = "127.0.0.1"  # 0.0.0.0 for a scraper on another machine
    max_age: float = 30.0  # seconds a source may go without a classified frame before /healthz says 503

    def __post_init__(self) -> None:
        _whole(self.TABLE, "port", self.port, 0, 65535)
        _text(self.TABLE, "host", self.host)
        _set(self, max_age=_number(self.TABLE, "max_age", self.max_age, 0, above=True))


@dataclass(frozen=True)
class CaptureConfig:
    """``[capture]``: keep the frames the model was unsure about, to label for the next model."""

    TABLE: ClassVar[Where] = ("capture",)
    dir: str
    below: float = 0.5  # top-1 probability below this
    margin: float | None = None  # or top-1 minus top-2 below this
    rate: float = 6.0  # frames per minute per source, at most
    max_mb: float = 500.0  # the folder's quota; the oldest captures go first

    def __post_init__(self) -> None:
        _text(self.TABLE, "dir", self.dir)
        _set(self, below=_number(self.TABLE, "below", self.below, 0, high=1),
             margin=_number(self.TABLE, "margin", self.margin, 0, high=1, optional=True),
             rate=_number(self.TABLE, "rate", self.rate, 0, above=True),
             max_mb=_number(self.TABLE, "max_mb", self.max_mb, 0, above=True))


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, repr=False)
class UiConfig(_Shown):
    """``[ui]``: the review page (service/review_server.py) on ``host:port``: the captured frames, labelled into
    ``dataset`` (``DATA/<class>/…`` and ``labels_csv`` in it). A host other than loopback needs ``token``."""

    TABLE: ClassVar[Where] = ("ui",)
    SECRET: ClassVar[str] = "token"
    port: int
    dataset: str
    host: str = "127.0.0.1"
    labels_csv: str = "labels.csv"  # a file name inside ``dataset``, in edge-train's --labels-csv form
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _whole(self.TABLE, "port", self.port, 0, 65535)
        _text(self.TABLE, "dataset", self.dataset)
        _text(self.TABLE, "host", self.host)
        name = _text(self.TABLE, "labels_csv", self.labels_csv) or ""
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".csv"):
            raise _Invalid(self.TABLE, "labels_csv", f"must be a file name ending in .csv (it is written inside dataset), "
                                                     f"got {_got(name)}")
        if self.token is not None and (not isinstance(self.token, str) or len(self.token.strip()) < 16):
            raise _Invalid(self.TABLE, "token", "must be at least 16 characters (e.g. python -c 'import secrets; "
                                                "print(secrets.token_urlsafe())')")
        if self.token is None and not _loopback(self.host):
            raise _Invalid(self.TABLE, "host", f"{_got(self.host)} is reachable from other machines: set a token "
                                               f"(token_env or token_file; ${UI_TOKEN_ENV} with --ui-port), or keep "
                                               "host = \"127.0.0.1\"")


@dataclass(frozen=True)
class HomeAssistantConfig:
    """``[homeassistant]``: MQTT discovery of each source's state, label and FPS (service/discovery.py)."""

    TABLE: ClassVar[Where] = ("homeassistant",)
    discovery_prefix: str = "homeassistant"
    node: str | None = None  # the device name's prefix and the topics' node id; default: this machine's host name
    stats_interval: float = 5.0  # seconds between two retained <prefix>/<source>/stats messages (the FPS sensor)

    def __post_init__(self) -> None:
        prefix = _text(self.TABLE, "discovery_prefix", self.discovery_prefix) or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", prefix):
            raise _Invalid(self.TABLE, "discovery_prefix", f"must be an MQTT topic without wildcards, got {_got(prefix)}")
        if _text(self.TABLE, "node", self.node, optional=True) and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.node or ""):
            raise _Invalid(self.TABLE, "node", f"must be 1-64 letters, digits, _ or -, got {_got(self.node)}")
        _set(self, stats_interval=_number(self.TABLE, "stats_interval", self.stats_interval, 0.1))


@dataclass(frozen=True)
class ReconnectConfig:
    """``[reconnect]``: a live source that drops out is reopened after 0.5 s, 1 s, 2 s … up to ``max`` seconds."""

    TABLE: ClassVar[Where] = ("reconnect",)
    max: float = 30.0

    def __post_init__(self) -> None:
        _set(self, max=_number(self.TABLE, "max", self.max, 0.01))


@dataclass(frozen=True, repr=False)
class SourceConfig(_Shown):
    """``[sources.<id>]``: one camera, stream, video, folder or list of files. ``kind`` is one of ``SOURCE_KINDS``
    and ``target`` what it reads (a camera index, a URL, a path, a tuple of paths). Per-source settings are more
    fields with defaults: the file's allowed keys follow from the fields."""

    id: str
    kind: str
    target: int | str | tuple[str, ...]
    every: int = 1  # camera, url, video: classify every Nth frame
    max_fps: float | None = None
    watch_timeout: float | None = None  # watch: stop after this many seconds without a new file
    max_files: int | None = None  # watch: stop after this many files
    regions: tuple[Region, ...] = ()  # each classified as a stream of its own (file: [{name, box | pixels}, …])
    smoothing: str = DEFAULT_SMOOTHING.method  # "ema", "vote" or "off" (no state records)
    window: int = DEFAULT_SMOOTHING.window  # frames the smoothing looks at
    hold: int = DEFAULT_SMOOTHING.hold  # frames a new smoothed label must last before its state record

    def __post_init__(self) -> None:
        where = ("sources", str(self.id))
        try:
            check_id(self.id if isinstance(self.id, str) else "")
        except UsageError as exc:
            raise _Invalid(where, None, str(exc)) from None
        _text(where, "kind", self.kind, choices=SOURCE_KINDS)
        kind, target = self.kind, self.target
        if kind == "camera":
            _whole(where, kind, target, 0)
        elif kind == "url" and not (isinstance(target, str) and is_url(target)):
            raise _Invalid(where, kind, "must be a stream URL with its scheme, e.g. rtsp://host:554/stream1")
        elif kind in ("video", "watch") and is_url(_text(where, kind, target)):
            raise _Invalid(where, kind, f"is a stream URL: write url = {_got(target)} instead")
        elif kind == "files":
            if not isinstance(target, (list, tuple)) or not target or not all(isinstance(p, str) and p for p in target):
                raise _Invalid(where, kind, f'must be a non-empty list of paths, e.g. ["a.jpg", "dir/"], got {_got(target)}')
            _set(self, target=tuple(target))
        if _whole(where, "every", self.every, 1) != 1 and kind not in _FRAME_KINDS:
            raise _Invalid(where, "every", f"is for {', '.join(_FRAME_KINDS)} sources, not {kind}")
        _set(self, max_fps=_number(where, "max_fps", self.max_fps, 0, above=True, optional=True),
             watch_timeout=_number(where, "watch_timeout", self.watch_timeout, 0, optional=True))
        _whole(where, "max_files", self.max_files, 1, optional=True)
        for key in ("watch_timeout", "max_files"):
            if getattr(self, key) is not None and kind != "watch":
                raise _Invalid(where, key, f"is for watch sources, not {kind}")
        _set(self, regions=_regions(where, self.regions))
        _text(where, "smoothing", self.smoothing, choices=(*SMOOTHERS, "off"))
        _whole(where, "window", self.window, 1)
        _whole(where, "hold", self.hold, 1)

    def states(self) -> Smoothing | None:
        """How this source's streams find their states; None with ``smoothing = "off"``."""
        return None if self.smoothing == "off" else Smoothing(self.smoothing, self.window, self.hold)

    @property
    def shown(self) -> str:
        """What the source reads, as a log may show it: ``camera 0``, ``url rtsp://***@cam/1`` (no user info)."""
        target = ", ".join(self.target) if self.kind == "files" else redact_url(str(self.target))
        return f"{self.kind} {target}"


def _regions(where: Where, value: Any) -> tuple[Region, ...]:
    """``regions = [{ name = "door", box = [0.0, 0.0, 0.5, 1.0] }, { name = "drive", pixels = [640, 0, 1280, 720] }]``
    (or ``Region`` items): a box is fractions of the frame (0 to 1), checked here; pixels are checked against the
    source's first frame."""
    if not isinstance(value, (list, tuple)):
        raise _Invalid(where, "regions", f'must be a list of tables, e.g. [{{ name = "door", box = [0.0, 0.0, 0.5, 1.0] }}], '
                                         f"got {_got(value)}")
    regions: list[Region] = []
    for i, item in enumerate(value, 1):
        if isinstance(item, Region):
            regions.append(item)
            continue
        what = f"region {i} ({_got(item.get('name'))})" if isinstance(item, dict) and "name" in item else f"region {i}"
        if not isinstance(item, dict):
            raise _Invalid(where, "regions", f"{what} must be a table {{ name = …, box = [x0, y0, x1, y1] }}, got {_got(item)}")
        unknown = sorted(set(item) - {"name", "box", "pixels"})
        boxes = [key for key in ("box", "pixels") if key in item]
        if unknown or len(boxes) != 1 or "name" not in item:
            raise _Invalid(where, "regions", f"{what}: a region has a name and one of box (fractions of the frame, 0 to 1) "
                                             "or pixels ([x0, y0, x1, y1])" + (f"; unknown key {unknown[0]}" if unknown else ""))
        try:
            regions.append(Region(item["name"], item[boxes[0]], pixels=boxes[0] == "pixels"))
        except UsageError as exc:
            raise _Invalid(where, "regions", str(exc)) from None
    names = [r.name for r in regions]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise _Invalid(where, "regions", f"region {twice!r} is given twice: each region needs its own name")
    return tuple(regions)


@dataclass(frozen=True)
class ServiceConfig:
    """The whole box: its sources (at least one), the model and how to load it, and the optional service parts
    (``None``: not run). ``model`` may be None here when the command line gives MODEL (``with_model``)."""

    sources: tuple[SourceConfig, ...]
    model: str | None = None
    model_options: ModelOptions = field(default_factory=ModelOptions)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig | None = None
    health: HealthConfig | None = None
    capture: CaptureConfig | None = None
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    ui: UiConfig | None = None
    homeassistant: HomeAssistantConfig | None = None

    def __post_init__(self) -> None:
        _set(self, sources=tuple(self.sources))
        if self.ui is not None and self.capture is None:
            raise _Invalid(("ui",), None, "the review page shows what capture keeps: add a [capture] table (--capture DIR)")
        if self.homeassistant is not None and self.mqtt is None:
            raise _Invalid(("homeassistant",), None, "discovery goes through the broker: add an [mqtt] table (--mqtt URL)")
        if not self.sources:
            raise _Invalid(("sources",), None, "no source: add a [sources.<id>] table with one of " + ", ".join(SOURCE_KINDS))
        _text((), "model", self.model, optional=True)
        seen: dict[object, SourceConfig] = {}
        for s in self.sources:
            where = ("sources", s.id)
            if s.id in (other.id for other in seen.values()):
                raise _Invalid(where, None, f"source id {s.id!r} is given twice")
            paths = s.target if s.kind == "files" else (s.target,) if s.kind in ("video", "watch") else None
            same = (s.kind, tuple(os.path.normpath(p) for p in paths) if paths else s.target)
            if same in seen:
                raise _Invalid(where, s.kind, f"sources {seen[same].id!r} and {s.id!r} both read {s.shown}; "
                                          "each camera, stream or folder needs one source")
            seen[same] = s

    @property
    def reconnect_max(self) -> float:
        return self.reconnect.max

    def with_model(self, model: str) -> ServiceConfig:
        """This config with the command line's MODEL, which wins over the file's ``model``."""
        return replace(self, model=model)

    def describe(self) -> str:
        """What would run, for ``serve --check``: one line per part, without credentials."""
        def text(part: Any) -> str:
            skip = ("id", "every") if getattr(part, "kind", None) in ("watch", "files") else ("id",)
            shown = [(k, ", ".join(map(str, v)) if k == "regions" else v) for k, v in _items(part) if k not in skip]
            return ", ".join(f"{k} {v}" for k, v in shown if v is not None and v != "")

        parts = [("model options", self.model_options), ("output", self.output),
                 *((f"source {s.id}", s) for s in self.sources), ("mqtt", self.mqtt), ("health", self.health),
                 ("capture", self.capture), ("reconnect", self.reconnect), ("ui", self.ui),
                 ("homeassistant", self.homeassistant)]

        def secret(part: Any) -> str:
            name = getattr(part, "SECRET", None)
            return f", {name} set" if name and getattr(part, name) else ""

        return "\n".join([f"model: {self.model}", *(f"{name}: {text(part)}{secret(part)}"
                                                    for name, part in parts if part is not None)])


# ---- the file --------------------------------------------------------------------------------------------------------

_PARTS = {"output": OutputConfig, "mqtt": MqttConfig, "health": HealthConfig, "capture": CaptureConfig,
          "reconnect": ReconnectConfig, "ui": UiConfig, "homeassistant": HomeAssistantConfig}
_TARGET_KEYS = ("camera", "url", "url_env", "url_file", "video", "watch", "files")
_SOURCE_KEYS = (*_TARGET_KEYS, *(f.name for f in fields(SourceConfig) if f.name not in ("id", "kind", "target")))
_TOP_KEYS = ("model", *(f.name for f in fields(ModelOptions)))


def load_config(path: str | os.PathLike) -> ServiceConfig:
    """Read and validate a service config file (docs/box.example.toml). Relative paths in it (``model``,
    ``verify_key``, a source's ``video``/``watch``/``files``/``url_file``, ``[mqtt] ca``/``password_file``,
    ``[capture] dir``) are relative to the file's folder, not to the working directory, so that the box starts
    the same from systemd and from a shell. Any problem is a ConfigError naming the file, the line and the key."""
    name = os.fspath(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read the config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise ConfigError(f"{name}{':' + line[1] if line else ''}: not valid TOML: {exc}") from None
    try:
        return _from_toml(data, Path(os.path.abspath(name)).parent)
    except _Invalid as exc:
        line = KeyLines(text).line(exc.where, exc.key)
        raise ConfigError(f"{name}{f':{line}' if line else ''}: {exc}") from None


def _from_toml(data: dict[str, Any], base: Path) -> ServiceConfig:
    def path(value: Any) -> Any:  # only text is a path: anything else is left for the dataclass to reject
        return str(base / value) if isinstance(value, str) and value and not is_url(value) else value

    _known(data, (), _TOP_KEYS, ("sources", *_PARTS))
    top = {key: path(data[key]) if key in ("model", "verify_key") else data[key] for key in _TOP_KEYS if key in data}
    parts: dict[str, Any] = {}
    for name, cls in _PARTS.items():
        values = _table(data, (name,))
        if values is None:
            continue
        secret_field = getattr(cls, "SECRET", None)
        extra = (f"{secret_field}_file", f"{secret_field}_env") if secret_field else ()
        _known(values, (name,), [*(f.name for f in fields(cls) if f.name != secret_field), *extra])
        for key in ("ca", "dir", "dataset"):
            if key in values:
                values[key] = path(values[key])
        secret = [key for key in extra if key in values]
        if len(secret) > 1:
            raise _Invalid((name,), secret[1], f"give {secret[0]} or {secret[1]}, not both")
        if secret:
            values[secret_field] = _secret((name,), secret[0], values.pop(secret[0]), path)
        parts[name] = _make(cls, values, (name,), {secret_field: secret[0]} if secret else {})
    sources, written = [], {}
    for source_id, values in (_table(data, ("sources",)) or {}).items():
        where = ("sources", source_id)
        if not isinstance(values, dict):
            raise _Invalid(where[:1], source_id, f"must be a table, [sources.{source_id}], with one of "
                                                 + ", ".join(_TARGET_KEYS))
        _known(values, where, _SOURCE_KEYS)
        given = [key for key in _TARGET_KEYS if key in values]
        if len(given) != 1:
            raise _Invalid(where, given[1] if given else None, "needs exactly one of " + ", ".join(_TARGET_KEYS)
                           + (f"; it has {' and '.join(given)}" if given else ""))
        key = written[source_id] = given[0]
        rest = {k: v for k, v in values.items() if k != key}
        target = values[key]
        if key in ("url_env", "url_file"):
            target = _secret(where, key, target, path).strip()
        elif key == "files" and isinstance(target, list):
            target = [path(p) for p in target]
        elif key in ("video", "watch"):
            target = path(target)
        kind = "url" if key.startswith("url") else key
        sources.append(_make(SourceConfig, {"id": source_id, "kind": kind, "target": target, **rest}, where, {kind: key}))
    try:
        return ServiceConfig(tuple(sources), top.pop("model", None), ModelOptions(**top), **parts)
    except _Invalid as exc:
        if exc.where[:1] == ("sources",) and exc.key in SOURCE_KINDS:  # point at the key the file has (url_env …)
            raise _Invalid(exc.where, written.get(exc.where[-1], exc.key), exc.problem) from None
        raise


def _table(data: dict[str, Any], where: Where) -> dict[str, Any] | None:
    value = data.get(where[-1])
    if value is not None and not isinstance(value, dict):
        raise _Invalid((), where[-1], "must be [sources.<id>] tables" if where == ("sources",) else f"must be a table, {_name(where)}")
    return None if value is None else dict(value)


def _known(values: dict[str, Any], where: Where, keys: Sequence[str], tables: Sequence[str] = ()) -> None:
    """Unknown keys and tables are errors: a misspelt key silently ignored would leave its default in force."""
    allowed = f"{_name(where) or 'the top level'} has the keys {', '.join(keys)}" + (
        f" and the tables {', '.join(f'[{t}.<id>]' if t == 'sources' else f'[{t}]' for t in tables)}" if tables
        else " (no tables)")
    for key, value in values.items():
        if key in tables:
            continue
        if isinstance(value, dict) and key not in keys:
            raise _Invalid((*where, key), None, f"unknown table; {allowed}")
        if key not in keys:
            raise _Invalid(where, key, f"unknown key; {allowed}")


def _secret(where: Where, key: str, value: Any, path: Any) -> str:
    """The text a ``*_env`` key's variable or a ``*_file`` key's file holds (never echoed in an error)."""
    _text(where, key, value)
    if key.endswith("_env"):
        secret = os.environ.get(value, "")
        if not secret:
            raise _Invalid(where, key, f"the environment variable {value} is not set, or empty")
        return secret
    try:
        secret = Path(path(value)).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Invalid(where, key, f"cannot read {path(value)}: {getattr(exc, 'strerror', None) or exc}") from None
    if not secret.strip():
        raise _Invalid(where, key, f"{path(value)} is empty")
    return secret


def _make(cls: type, values: dict[str, Any], where: Where, keys: dict[str, str]) -> Any:
    """``cls(**values)``, a missing required key as an error; ``keys`` maps a field to the key the file wrote."""
    for f in fields(cls):
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise _Invalid(where, None, f"needs {f.name} = …")
    try:
        return cls(**values)
    except _Invalid as exc:
        if exc.key in keys and keys[exc.key] != exc.key:
            raise _Invalid(exc.where, keys[exc.key], exc.problem) from None
        raise


# ---- the flags ------------------------------------------------------------------------------------------------------

#: Where a value comes from on the command line, when the option is not simply ``--<table>-<key>``.
_FLAGS = {("mqtt", "url"): "--mqtt", ("capture", "dir"): "--capture", ("output", "format"): "--output-format",
          ("sources", "url"): "--video", ("sources", "files"): "INPUTS",
          ("reconnect", "max"): "--reconnect-max", ("", "reload"): "--reload", ("ui", "token"): f"${UI_TOKEN_ENV}",
          ("homeassistant", None): "--ha-discovery", ("ui", None): "--ui-port"}


def config_from_flags(model: str, inputs: Sequence[str], params: dict[str, Any]) -> ServiceConfig:
    """The config of ``edge-predict serve MODEL --video a --camera 0 …``; ``params`` are the command's click parameters
    (as named in ``cli.options``). Ids come from ``--name ID=SOURCE``, else ``camera1``, ``video1`` … in order."""
    given = ([("files", ",".join(inputs))] if inputs else []) + [("camera", str(c)) for c in params["camera"]] + \
        [("video", v) for v in params["video"]] + [("watch", w) for w in params["watch"]]
    if not given:
        raise ConfigError("give INPUTS, --video, --camera or --watch (the last three may be repeated), or --config box.toml")
    twice = [f"--{kind} {target}" for i, (kind, target) in enumerate(given) if (kind, target) in given[:i]]
    if twice:
        raise ConfigError(f"{twice[0]} is given twice: each camera, stream or folder needs one source")
    ids = parse_names(params["names"], given)
    p = params
    if p["regions"] and len(given) > 1:
        raise ConfigError("--region is for one source; for regions on several, give each its regions = [...] in "
                          "--config box.toml (docs/service.md)")
    try:
        regions = [Region.parse(text) for text in p["regions"]]
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    smoothing = {key: p[key] for key in ("smoothing", "window", "hold") if p[key] is not None}
    try:
        sources = []
        for kind, target in given:
            source_id, common = ids[(kind, target)], {"max_fps": p["max_fps"], "regions": regions, **smoothing}
            if kind == "watch":
                common.update(watch_timeout=p["watch_timeout"], max_files=p["max_files"])
            elif kind != "files":
                common["every"] = p["every"]
            value = tuple(inputs) if kind == "files" else int(target) if kind == "camera" else target
            sources.append(SourceConfig(source_id, "url" if kind == "video" and is_url(target) else kind, value, **common))
        mqtt = MqttConfig(p["mqtt_url"], p["mqtt_qos"], p["mqtt_ca"], p["mqtt_queue"]) if p["mqtt_url"] else None
        health = HealthConfig(p["health_port"], p["health_host"], p["health_max_age"]) if p["health_port"] is not None else None
        capture = (CaptureConfig(p["capture_dir"], p["capture_below"], p["capture_margin"], p["capture_rate"],
                                 p["capture_max_mb"]) if p["capture_dir"] is not None else None)
        options = ModelOptions(p["backend"], p["model_format"], p["threads"], p["exact_preprocess"], p["max_pixels"],
                               p["verify_key"], p["hot_reload"], p["reload_interval"], not p["no_unknown"],
                               p["unknown_below"])
        output = OutputConfig(p["fmt"], p["top_k"], p["threshold"], p["batch"])
        ui = _ui_from_flags(p)
        homeassistant = HomeAssistantConfig() if p["ha_discovery"] else None
        return ServiceConfig(tuple(sources), model, options, output, mqtt, health, capture, ReconnectConfig(p["reconnect_max"]),
                             ui, homeassistant)
    except _Invalid as exc:  # say it in the command line's words: --mqtt, --every, not [mqtt] url, [sources.x] every
        if exc.key is None:
            flag = _FLAGS.get((exc.where[0] if exc.where else "", None))
            raise ConfigError(f"{flag}: {exc.problem}" if flag else exc.problem) from None
        table = exc.where[0] if exc.where else ""
        if exc.key == "regions":
            raise ConfigError(f"--region: {exc.problem}") from None
        flag = _FLAGS.get((table, exc.key)) or "--" + "-".join(
            ([table] if table in ("mqtt", "health", "capture", "ui") else []) + [exc.key]).replace("_", "-")
        raise ConfigError(f"{flag}: {exc.problem}") from None


def _ui_from_flags(p: dict[str, Any]) -> UiConfig | None:
    """``--ui-port`` and its companions; the token comes from ``$EDGEPORT_UI_TOKEN``, never from argv."""
    if p["ui_port"] is None:
        if p["ui_dataset"] is not None:
            raise ConfigError("--ui-dataset goes with --ui-port (the review page that writes the labels)")
        return None
    if p["ui_dataset"] is None:
        raise ConfigError("--ui-port needs --ui-dataset DIR: where the labelled frames go (DIR/<class>/…)")
    return UiConfig(p["ui_port"], p["ui_dataset"], p["ui_host"], token=os.environ.get(UI_TOKEN_ENV) or None)
