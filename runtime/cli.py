"""``edge-predict``: classify files, folders, a video, a camera or a watched folder, torch-free.

Exit codes (``errors.ExitCode``, docs/exit-codes.md): 0 every input classified; 6 some inputs failed
(each has an error record, the rest were still classified); 2 bad usage, including a model or a source
that cannot be opened (or a watched folder that disappears); 3 a failed --self-test; 1 an internal error;
130 stopped by Ctrl-C, 143 stopped by SIGTERM (both after printing the summary).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import click

from .backends import backend_names
from .classifier import Classifier
from .cli_support import debug_option, exit_on_error
from .conformance import self_test_bundle
from .errors import EdgeportError, ExitCode
from .formats import format_names
from .frames import camera_frames, file_frames, paced, video_frames, watch_frames
from .inputs import expand_inputs
from .preprocess import DEFAULT_MAX_PIXELS
from .records import OUTPUT_FORMATS, Summary, csv_header, format_record, to_record
from .service.cli_run import ServiceOptions, run_service
from .shutdown import SigtermStop, Terminated
from .signing import VERIFY_KEY_ENV


def _frames(inputs, video, camera, watch, every, max_fps, watch_timeout, max_files, started):
    """The one frame iterator the options ask for."""
    chosen = [name for name, given in (("INPUTS", inputs), ("--video", video), ("--camera", camera),
                                       ("--watch", watch)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of INPUTS, --video FILE, --camera INDEX or --watch DIR"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    if video:
        return paced(video_frames(video[0], every), max_fps)
    if camera:
        return paced(camera_frames(camera[0], every), max_fps, live=True)
    if watch:
        return paced(watch_frames(watch[0], idle_timeout=watch_timeout, max_files=max_files, since=started), max_fps)
    return paced(file_frames(expand_inputs(inputs)), max_fps)


def _batch(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: a whole number ≥ 1, or 'auto' (one frame per source per call)")
    return int(value)


def _self_test(model, inputs, video, camera, watch, model_format, threads, verify_key, fmt, debug) -> None:
    """``--self-test``: the report on stdout (JSON with --output-format jsonl), exit 0 or 1."""
    if inputs or video or camera or watch:
        raise click.UsageError("--self-test runs the bundle's own reference images; give no INPUTS, --video, --camera or --watch")
    with exit_on_error(debug):
        report = self_test_bundle(model, formats=[model_format] if model_format else None, threads=threads,
                                  verify_key=verify_key or False)
    click.echo(json.dumps(report.to_dict()) if fmt == "jsonl" else report.text())
    sys.exit(ExitCode.OK if report.passed else ExitCode.SELF_TEST_FAILED)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True, dir_okay=True))
@click.argument("inputs", nargs=-1)
@click.option("--video", multiple=True, help="Classify the frames of this video file, or of an rtsp:// / http:// stream "
              "(needs [camera]). Repeatable.")
@click.option("--camera", type=click.IntRange(min=0), multiple=True,
              help="Classify live frames of this camera index (needs [camera]). Repeatable.")
@click.option("--watch", type=click.Path(file_okay=False), multiple=True,
              help="Classify image files as they appear in this folder. Repeatable.")
@click.option("--name", "names", multiple=True, metavar="ID=SOURCE",
              help="Name a source (--name door=0, --name yard=rtsp://…); the id is in every record and MQTT topic. "
                   "Default: camera1, video1, watch1 … in order. Repeatable.")
@click.option("--reconnect", is_flag=True,
              help="Serve even a single source as a service: a live source (camera, stream) that drops out is reopened "
                   "with backoff. Implied by several sources, --name, --mqtt, --health-port and --capture.")
@click.option("--mqtt", "mqtt_url", metavar="URL", default=None,
              help="Publish each record as JSON to mqtt://[user:pass@]host[:port]/prefix (mqtts:// for TLS): topic "
                   "<prefix>/<source id>, retained <prefix>/status online/offline with a last will (needs [mqtt]).")
@click.option("--mqtt-qos", type=click.IntRange(0, 2), default=1, show_default=True, help="--mqtt: QoS of the records.")
@click.option("--mqtt-ca", type=click.Path(dir_okay=False), default=None, help="--mqtt mqtts://: the broker's CA (PEM).")
@click.option("--mqtt-queue", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="--mqtt: records kept while the broker is away; the oldest are dropped past this, and the count "
                   "is published on <prefix>/dropped once it is back.")
@click.option("--health-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /healthz (200 while every source delivers, else 503, JSON per source) and /metrics (Prometheus; "
                   "needs [metrics]) on this port.")
@click.option("--health-host", default="127.0.0.1", show_default=True,
              help="--health-port: address to listen on (0.0.0.0 for a scraper on another machine).")
@click.option("--health-max-age", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="--health-port: seconds a source may go without a classified frame before /healthz says 503.")
@click.option("--capture", "capture_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the frames the model was unsure about here (JPEG + JSON sidecar per frame, a folder per source), "
                   "to label for the next model (docs/service.md).")
@click.option("--capture-below", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="--capture: keep a frame whose top-1 probability is below this.")
@click.option("--capture-margin", type=click.FloatRange(0, 1), default=None,
              help="--capture: also keep a frame whose top-1 minus top-2 probability is below this.")
@click.option("--capture-rate", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
              help="--capture: at most this many frames per minute per source.")
@click.option("--capture-max-mb", type=click.FloatRange(min=0, min_open=True), default=500.0, show_default=True,
              help="--capture: disk quota of the folder; the oldest captures are deleted first.")
@click.option("--reconnect-max", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              help="Longest wait between two reconnect attempts, in seconds (from 0.5 s, doubling).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Video/camera: every Nth frame.")
@click.option("--max-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many frames per second (a camera drops the frames in between).")
@click.option("--watch-timeout", type=click.FloatRange(min=0), default=None,
              help="--watch: stop after this many seconds without a new file (default: until Ctrl-C).")
@click.option("--max-files", type=click.IntRange(min=1), default=None, help="--watch: stop after this many files.")
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes per image.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Report the label 'unknown' when the best probability is below this.")
@click.option("--output-format", "--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default="table", show_default=True,
              help="How records are printed (--format is the older name).")
@click.option("--backend", type=click.Choice(["auto", *backend_names()]), default="auto", show_default=True,
              help="auto: the bundle's first format (FP32 ONNX), or the file's own backend.")
@click.option("--model-format", type=click.Choice(format_names()), default=None,
              help="A bundle format by name (one the bundle has).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads (default: the backend's).")
@click.option("--batch", type=_batch, default="1", show_default=True, metavar="N|auto",
              help="Images per inference call; 'auto' with several sources: one frame of each ready source per call.")
@click.option("--exact-preprocess", is_flag=True,
              help="The contract's reference resize instead of the fast JPEG path (DCT-domain downscaled decoding).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Pixel budget per image: larger pictures get an error record (a JPEG is draft-decoded within it).")
@click.option("--verify-key", envvar=VERIFY_KEY_ENV, type=click.Path(dir_okay=False), default=None,
              help=f"Serve only bundles signed by this EC public key, or by a certificate of this CA (PEM; needs [signing]); "
                   f"${VERIFY_KEY_ENV} sets it for a device.")
@click.option("--self-test", is_flag=True,
              help="Replay the bundle's conformance kit on this machine, per format (or --model-format): max |Δlogit|, "
                   "top-1 agreement, preprocessing max |Δ|. Exit 0 when every format is within its tolerance, else 3.")
@click.option("--reload", "hot_reload", is_flag=True,
              help="Watch MODEL (a bundle folder or a symlink to one) and swap to a new bundle between two frames once it "
                   "passed sha256, signature (with --verify-key) and self-test; a failed check keeps the old model. One JSON "
                   "record per swap or rejected update (on stdout with --output-format jsonl, else stderr).")
@click.option("--reload-interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="--reload: seconds between looks at MODEL.")
@debug_option
def main(model: str, inputs: tuple[str, ...], video: tuple[str, ...], camera: tuple[int, ...], watch: tuple[str, ...],
         names: tuple[str, ...], reconnect: bool, mqtt_url: str | None, mqtt_qos: int, mqtt_ca: str | None, mqtt_queue: int,
         health_port: int | None, health_host: str, health_max_age: float, capture_dir: str | None, capture_below: float,
         capture_margin: float | None, capture_rate: float, capture_max_mb: float, reconnect_max: float, every: int,
         max_fps: float | None, watch_timeout: float | None, max_files: int | None, top_k: int, threshold: float | None,
         fmt: str, backend: str, model_format: str | None, threads: int | None, batch: int | str, exact_preprocess: bool,
         max_pixels: int, verify_key: str | None, self_test: bool, hot_reload: bool, reload_interval: float,
         debug: bool) -> None:
    """Classify INPUTS (image files, folders — recursive, sorted — or '-' for paths on stdin), a --video,
    a --camera or a --watch folder with MODEL (an edge-export bundle directory, an .onnx file or an
    OpenVINO .xml). Preprocessing and labels come from the model itself. One record per frame on
    stdout, a summary (count, failures, latency mean/p50/p90, FPS) on stderr."""
    started = time.time()  # --watch: files written while the model loads count as new
    if hasattr(sys.stdout, "reconfigure"):  # a non-UTF-8 terminal gets escapes, not a UnicodeEncodeError mid-run
        sys.stdout.reconfigure(errors="backslashreplace")
    if self_test:
        _self_test(model, inputs, video, camera, watch, model_format, threads, verify_key, fmt, debug)
    service = ServiceOptions(names, reconnect, reconnect_max, mqtt_url, mqtt_qos, mqtt_ca, mqtt_queue, health_port, health_host,
                             health_max_age, capture_dir, capture_below, capture_margin, capture_rate, capture_max_mb)
    if service.wanted(inputs, video, camera, watch):
        run_service(model, inputs, video, camera, watch, service, every=every, max_fps=max_fps, watch_timeout=watch_timeout,
                    max_files=max_files, top_k=top_k, threshold=threshold, fmt=fmt, started=started, debug=debug,
                    batch=batch, hot_reload=hot_reload, reload_interval=reload_interval,
                    classifier=dict(backend=backend, format=model_format, threads=threads, exact_preprocess=exact_preprocess,
                                    max_pixels=max_pixels, verify_key=verify_key or False))
    batch = 1 if batch == "auto" else batch
    with exit_on_error(debug):  # a model, video, camera or folder that cannot be opened: its error type's code
        frames = _frames(inputs, video, camera, watch, every, max_fps, watch_timeout, max_files, started)
        clf = Classifier(model, backend=backend, format=model_format, threads=threads, batch_size=batch,
                         exact_preprocess=exact_preprocess, max_pixels=max_pixels, verify_key=verify_key or False)
        summary, stopped, failure = Summary(started=time.perf_counter()), None, None
        echo_lock = threading.Lock()  # reload records come from the watcher thread too: whole lines only

        def echo(text: str, err: bool = False) -> None:
            with echo_lock:
                click.echo(text, err=err)

        if hot_reload:
            clf.auto_reload(lambda record: echo(json.dumps(record, ensure_ascii=False), err=fmt != "jsonl"), reload_interval)
        if fmt == "csv":
            click.echo(csv_header())
        with SigtermStop() as sigterm:
            try:
                for result in clf.stream(sigterm.frames(frames), top_k=top_k, threshold=threshold, batch=batch):
                    summary.add(result)  # counted before printed: a Ctrl-C in between never loses a shown record
                    echo(format_record(to_record(result), fmt))
            except KeyboardInterrupt:
                stopped = "interrupted"
            except Terminated:
                pass
            except EdgeportError as exc:  # the source failed mid-stream (a watched folder removed): summary first
                failure = exc
            finally:
                clf.stop_reload()
            if sigterm.requested:
                stopped = "terminated"
    name = clf.format or clf.model_path.name
    click.echo(f"{summary.text(time.perf_counter(), stopped=stopped)} ({name} on {clf.backend})", err=True)
    if failure is not None:
        with exit_on_error(debug):
            raise failure
    codes = {"interrupted": ExitCode.INTERRUPTED, "terminated": ExitCode.TERMINATED}
    sys.exit(codes[stopped] if stopped else ExitCode.SOME_INPUTS_FAILED if summary.failed else ExitCode.OK)


if __name__ == "__main__":
    main()
