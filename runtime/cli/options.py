"""edge-predict's options, each written once and shared by the subcommands (and the flat form) that take it."""

from __future__ import annotations

from typing import Callable

import click

from ..backends import backend_names
from ..formats import format_names
from ..preprocess import DEFAULT_MAX_PIXELS
from ..records import OUTPUT_FORMATS
from ..signing import VERIFY_KEY_ENV
from ..stream import DEFAULT_SMOOTHING, SMOOTHERS

__all__ = ["model_argument", "model_options", "format_option", "threads_option", "verify_key_option", "source_options", "service_options", "output_options", "reload_options",
           "stack", "loader_kwargs"]

Decorator = Callable[[Callable], Callable]


def stack(*decorators: Decorator) -> Decorator:
    """Several click decorators as one, applied in the order written (the first is the first in --help)."""
    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


def _batch(value: str | int) -> int | str:
    if value == "auto" or isinstance(value, int):
        return value
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: a whole number ≥ 1, or 'auto' (one frame per source per call)")
    return int(value)


model_argument = click.argument("model", type=click.Path(exists=True, dir_okay=True))

format_option = click.option("--model-format", type=click.Choice(format_names()), default=None,
                             help="A bundle format by name (one the bundle has).")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                              help="Inference threads (default: the backend's).")
verify_key_option = click.option(
    "--verify-key", envvar=VERIFY_KEY_ENV, type=click.Path(dir_okay=False), default=None,
    help=f"Serve only bundles signed by this EC public key, or by a certificate of this CA (PEM; needs [signing]); "
         f"${VERIFY_KEY_ENV} sets it for a device.")

model_options = stack(
    click.option("--backend", type=click.Choice(["auto", *backend_names()]), default="auto", show_default=True,
                 help="auto: the bundle's first format (FP32 ONNX), or the file's own backend."),
    format_option,
    threads_option,
    click.option("--exact-preprocess", is_flag=True,
                 help="The contract's reference resize instead of the fast JPEG path (DCT-domain downscaled decoding)."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Pixel budget per image: larger pictures get an error record (a JPEG is draft-decoded within it)."),
    verify_key_option,
    click.option("--unknown-below", type=float, default=None,
                 help="Call a frame 'unknown' when the model's unknown score is below this, instead of the threshold "
                      "the trainer fitted (the score and its scale are the model's: see a record's ood_score)."),
    click.option("--no-unknown", is_flag=True,
                 help="Never call a frame 'unknown' by the model's own rule (records carry no unknown/ood_score)."),
)

source_options = stack(
    click.argument("inputs", nargs=-1),
    click.option("--video", multiple=True, help="Classify the frames of this video file, or of an rtsp:// / http:// "
                 "stream (needs [camera]). Repeatable with serve."),
    click.option("--camera", type=click.IntRange(min=0), multiple=True,
                 help="Classify live frames of this camera index (needs [camera]). Repeatable with serve."),
    click.option("--watch", type=click.Path(file_okay=False), multiple=True,
                 help="Classify image files as they appear in this folder. Repeatable with serve."),
    click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Video/camera: every Nth frame."),
    click.option("--max-fps", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="At most this many frames per second (a camera drops the frames in between)."),
    click.option("--watch-timeout", type=click.FloatRange(min=0), default=None,
                 help="--watch: stop after this many seconds without a new file (default: until Ctrl-C)."),
    click.option("--max-files", type=click.IntRange(min=1), default=None, help="--watch: stop after this many files."),
    click.option("--region", "regions", multiple=True, metavar="NAME=x0,y0,x1,y1[px]",
                 help="Classify this region of the source's picture as a stream of its own: fractions of the frame "
                      "(--region door=0,0,0.5,1) or pixels (--region door=0,0,640,720px). Repeatable; one source."),
    click.option("--smoothing", type=click.Choice([*SMOOTHERS, "off"]), default=None,
                 help=f"State records: smooth each stream's probabilities by a window vote or an EMA, and print a "
                      f"state when the smoothed label changes and holds (serve: {DEFAULT_SMOOTHING.method} unless off; "
                      "classify: off unless given)."),
    click.option("--window", type=click.IntRange(min=1), default=None,
                 help=f"--smoothing: frames the vote (or the EMA's span) looks at [default: {DEFAULT_SMOOTHING.window}]."),
    click.option("--hold", type=click.IntRange(min=1), default=None,
                 help=f"--smoothing: frames a new smoothed label must last before its state record "
                      f"[default: {DEFAULT_SMOOTHING.hold}]."),
)

output_options = stack(
    click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes per image."),
    click.option("--threshold", type=click.FloatRange(0, 1), default=None,
                 help="Report the label 'unknown' when the best probability is below this."),
    click.option("--output-format", "--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default="table",
                 show_default=True, help="How records are printed (--format is the older name)."),
    click.option("--batch", type=_batch, default="1", show_default=True, metavar="N|auto",
                 help="Images per inference call at most; 'auto' with several sources: one frame of each ready source "
                      "per call."),
)

reload_options = stack(
    click.option("--reload", "hot_reload", is_flag=True,
                 help="Watch MODEL (a bundle folder or a symlink to one) and swap to a new bundle between two frames once "
                      "it passed sha256, signature (with --verify-key) and self-test; a failed check keeps the old model. "
                      "One JSON record per swap or rejected update (on stdout with --output-format jsonl, else stderr)."),
    click.option("--reload-interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
                 help="--reload: seconds between looks at MODEL."),
)

service_options = stack(
    click.option("--name", "names", multiple=True, metavar="ID=SOURCE",
                 help="Name a source (--name door=0, --name yard=rtsp://…); the id is in every record and MQTT topic. "
                      "Default: camera1, video1, watch1 … in order. Repeatable."),
    click.option("--reconnect", is_flag=True,
                 help="Serve even a single source as a service: a live source (camera, stream) that drops out is "
                      "reopened with backoff."),
    click.option("--reconnect-max", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
                 help="Longest wait between two reconnect attempts, in seconds (from 0.5 s, doubling)."),
    click.option("--mqtt", "mqtt_url", metavar="URL", default=None,
                 help="Publish each record as JSON to mqtt://[user@]host[:port]/prefix (mqtts:// for TLS): topic "
                      "<prefix>/<source id>, retained <prefix>/status online/offline with a last will (needs [mqtt]). "
                      "Keep a password out of argv: put it in the config file's [mqtt] password_file or password_env."),
    click.option("--mqtt-qos", type=click.IntRange(0, 2), default=1, show_default=True, help="--mqtt: QoS of the records."),
    click.option("--mqtt-ca", type=click.Path(dir_okay=False), default=None, help="--mqtt mqtts://: the broker's CA (PEM)."),
    click.option("--mqtt-queue", type=click.IntRange(min=1), default=10_000, show_default=True,
                 help="--mqtt: records kept while the broker is away; the oldest are dropped past this, and the count "
                      "is published on <prefix>/dropped once it is back."),
    click.option("--health-port", type=click.IntRange(0, 65535), default=None,
                 help="Serve /healthz (200 while every source delivers, else 503, JSON per source) and /metrics "
                      "(Prometheus; needs [metrics]) on this port."),
    click.option("--health-host", default="127.0.0.1", show_default=True,
                 help="--health-port: address to listen on (0.0.0.0 for a scraper on another machine)."),
    click.option("--health-max-age", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
                 help="--health-port: seconds a source may go without a classified frame before /healthz says 503."),
    click.option("--capture", "capture_dir", type=click.Path(file_okay=False), default=None,
                 help="Keep the frames the model was unsure about here (JPEG + JSON sidecar per frame, a folder per "
                      "source), to label for the next model (docs/service.md)."),
    click.option("--capture-below", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="--capture: keep a frame whose top-1 probability is below this."),
    click.option("--capture-margin", type=click.FloatRange(0, 1), default=None,
                 help="--capture: also keep a frame whose top-1 minus top-2 probability is below this."),
    click.option("--capture-rate", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
                 help="--capture: at most this many frames per minute per source."),
    click.option("--capture-max-mb", type=click.FloatRange(min=0, min_open=True), default=500.0, show_default=True,
                 help="--capture: disk quota of the folder; the oldest captures are deleted first."),
    click.option("--ui-port", type=click.IntRange(0, 65535), default=None,
                 help="Serve the review page on this port: each camera's latest frame, and the captured frames to label "
                      "into --ui-dataset (needs --capture; docs/service.md)."),
    click.option("--ui-host", default="127.0.0.1", show_default=True,
                 help="--ui-port: address to listen on; any other than loopback needs a token in $EDGEPORT_UI_TOKEN."),
    click.option("--ui-dataset", type=click.Path(file_okay=False), default=None,
                 help="--ui-port: the dataset the page labels into (DIR/<class>/…, DIR/labels.csv), for edge-train."),
    click.option("--ha-discovery", is_flag=True,
                 help="--mqtt: announce each source's state, label and FPS to Home Assistant (MQTT discovery, retained)."),
)

#: The model options' parameter names → ``Classifier`` keywords.
_LOADER_KEYS = {"backend": "backend", "model_format": "format", "threads": "threads",
                "exact_preprocess": "exact_preprocess", "max_pixels": "max_pixels", "verify_key": "verify_key"}


def loader_kwargs(params: dict) -> dict:
    """The ``Classifier`` keywords among a command's parameters. No --verify-key: None, so that the classifier reads
    ``$EDGEPORT_VERIFY_KEY`` itself and refuses it when set but empty (click reads an empty variable as unset)."""
    return {**{key: params[name] for name, key in _LOADER_KEYS.items()}, "unknown": not params["no_unknown"],
            "unknown_below": params["unknown_below"]}
