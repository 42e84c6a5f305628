"""``edge-predict``: classify files, folders, a video, a camera or a watched folder, torch-free; serve several
sources as a camera box; replay a bundle's self-test.

    edge-predict classify MODEL INPUTS…            one source (today's flat form, ``edge-predict MODEL INPUTS…``, too)
    edge-predict serve --config box.toml           the camera box: sources, MQTT, health, capture from one file
    edge-predict serve MODEL --video a --video b   the same from flags, for one or two sources
    edge-predict self-test MODEL                   the conformance kit on this machine

Exit codes (``errors.ExitCode``, docs/exit-codes.md): 0 every input classified; 6 some inputs failed
(each has an error record, the rest were still classified); 2 bad usage, including a model, a config file or a
source that cannot be opened (or a watched folder that disappears); 3 a failed self-test; 1 an internal error;
130 stopped by Ctrl-C, 143 stopped by SIGTERM (both after printing the summary).
"""

from __future__ import annotations

import sys
import time

import click

from ..cli_support import debug_option
from .classify import run_classify
from .options import (
    format_option,
    loader_kwargs,
    model_argument,
    model_options,
    output_options,
    reload_options,
    service_options,
    source_options,
    stack,
    threads_option,
    verify_key_option,
)
from .self_test import run_self_test
from .serve import run_serve, serve_wanted

__all__ = ["main"]

_FLAT = "flat"  # the hidden command behind ``edge-predict MODEL …`` (no subcommand named)


class _Commands(click.Group):
    """A group whose first argument may be a MODEL instead of a subcommand: the flat form scripts already use."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [_FLAT, *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in super().list_commands(ctx) if name != _FLAT]


def _prepare_stdout() -> None:
    if hasattr(sys.stdout, "reconfigure"):  # a non-UTF-8 terminal gets escapes, not a UnicodeEncodeError mid-run
        sys.stdout.reconfigure(errors="backslashreplace")


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Classify images, videos, cameras and watched folders with an edgeport model (an edge-export bundle directory,
    an .onnx file or an OpenVINO .xml), torch-free. Preprocessing and labels come from the model itself.
    ``edge-predict MODEL INPUTS…`` is short for ``edge-predict classify MODEL INPUTS…``."""
    _prepare_stdout()


@main.command("classify")
@stack(model_argument, source_options, output_options, model_options, reload_options, debug_option)
def classify(model: str, inputs: tuple[str, ...], **params) -> None:
    """Classify INPUTS (image files, folders — recursive, sorted — or '-' for paths on stdin), a --video, a --camera
    or a --watch folder with MODEL. One record per frame on stdout, a summary (count, failures, latency
    mean/p50/p90, FPS) on stderr."""
    started = time.time()  # --watch: files written while the model loads count as new
    run_classify(model, inputs, **_source_kwargs(params), **_output_kwargs(params), hot_reload=params["hot_reload"],
                 reload_interval=params["reload_interval"], loader=loader_kwargs(params), debug=params["debug"],
                 started=started)


@main.command("serve")
@click.argument("model", required=False, type=click.Path(exists=True, dir_okay=True))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The service's TOML file: one [sources.<id>] table per camera, stream or folder; [mqtt], [health], "
                   "[capture] (docs/service.md). Flags given as well override its values.")
@click.option("--check", is_flag=True, help="Validate --config (and the sources' flags), print what would run, and exit.")
@stack(source_options, service_options, output_options, model_options, reload_options, debug_option)
def serve(model: str | None, config_path: str | None, check: bool, inputs: tuple[str, ...], **params) -> None:
    """The camera box: several sources (cameras, RTSP/HTTP streams, videos, watched folders) in one process with one
    model; reconnects with backoff, MQTT out, /healthz and /metrics, captures of unsure frames."""
    started = time.time()
    run_serve(model, config_path, inputs, params, check=check, started=started)


@main.command("self-test")
@model_argument
@stack(format_option, threads_option, verify_key_option)
@click.option("--output-format", "--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="The report as text, or as one JSON document.")
@debug_option
def self_test(model: str, fmt: str, **params) -> None:
    """Replay MODEL's conformance kit on this machine, per format (or --model-format): max |Δlogit|, top-1 agreement,
    preprocessing max |Δ|. Exit 0 when every format is within its tolerance, else 3."""
    run_self_test(model, model_format=params["model_format"], threads=params["threads"], verify_key=params["verify_key"],
                  fmt=fmt, debug=params["debug"])


@main.command(_FLAT, hidden=True)
@stack(model_argument, source_options, service_options, output_options, model_options, reload_options)
@click.option("--self-test", "self_test_flag", is_flag=True,
              help="Replay the bundle's conformance kit (as 'edge-predict self-test MODEL').")
@debug_option
def flat(model: str, inputs: tuple[str, ...], self_test_flag: bool, **params) -> None:
    """Today's flat form, ``edge-predict MODEL …``, routed to the subcommand its options ask for."""
    started = time.time()
    if self_test_flag:
        if inputs or params["video"] or params["camera"] or params["watch"]:
            raise click.UsageError("--self-test runs the bundle's own reference images; give no INPUTS, --video, "
                                   "--camera or --watch")
        run_self_test(model, model_format=params["model_format"], threads=params["threads"],
                      verify_key=params["verify_key"], fmt="jsonl" if params["fmt"] == "jsonl" else "table",
                      debug=params["debug"])
    if serve_wanted(inputs, params):
        run_serve(model, None, inputs, params, check=False, started=started)
    run_classify(model, inputs, **_source_kwargs(params), **_output_kwargs(params), hot_reload=params["hot_reload"],
                 reload_interval=params["reload_interval"], loader=loader_kwargs(params), debug=params["debug"],
                 started=started)


def _source_kwargs(params: dict) -> dict:
    return {key: params[key] for key in ("video", "camera", "watch", "every", "max_fps", "watch_timeout", "max_files",
                                         "regions", "smoothing", "window", "hold")}


def _output_kwargs(params: dict) -> dict:
    return {key: params[key] for key in ("top_k", "threshold", "fmt", "batch")}


if __name__ == "__main__":
    main()
