"""``edge-predict serve``: the camera box, from a TOML file (``--config box.toml``) or from flags for one or two
sources. Both forms build one ``service.ServiceConfig``, validated the same way, and run it the same way."""

from __future__ import annotations

from typing import NoReturn

import click
from click.core import ParameterSource

from ..classifier import Classifier
from ..cli_support import exit_on_error
from ..errors import ExitCode, UsageError
from ..reload import HotReloader
from ..service import Box, ServiceConfig, build_sources, load_config
from ..service.config import config_from_flags
from ..stream import Stream
from .report import Echo, print_stream

__all__ = ["run_serve", "serve_wanted"]

#: serve's options that are not settings of the box (every other option belongs in the file with --config).
_NOT_IN_THE_FILE = {"config_path", "check", "debug"}


def serve_wanted(inputs: tuple[str, ...], params: dict) -> bool:
    """Whether the flat form's options ask for the service: several sources or any service part."""
    count = (1 if inputs else 0) + len(params["video"]) + len(params["camera"]) + len(params["watch"])
    return count > 1 or bool(params["names"]) or params["reconnect"] or params["ha_discovery"] or any(
        params[key] is not None for key in ("mqtt_url", "health_port", "capture_dir", "ui_port", "ui_dataset"))


def _given_on_the_command_line() -> list[str]:
    """The file's settings given as flags too, named as typed (an environment default such as $EDGEPORT_VERIFY_KEY is
    no clash: a device sets it once for every command). Read off the command's own options, so a new one is covered."""
    ctx = click.get_current_context()
    return [option.opts[0] for option in ctx.command.params
            if isinstance(option, click.Option) and option.name not in _NOT_IN_THE_FILE
            and ctx.get_parameter_source(option.name) == ParameterSource.COMMANDLINE]


def _config(model: str | None, config_path: str | None, inputs: tuple[str, ...], params: dict) -> ServiceConfig:
    if config_path is None:
        if model is None:
            raise UsageError("give MODEL and its sources (--video, --camera, --watch, INPUTS), or --config box.toml")
        return config_from_flags(model, inputs, params)
    clashing = _given_on_the_command_line() + (["INPUTS"] if inputs else [])
    if clashing:
        raise UsageError(f"{', '.join(clashing)}: with --config, set this in {config_path} instead (docs/service.md)")
    config = load_config(config_path)
    if model is not None:
        config = config.with_model(model)
    if config.model is None:
        raise UsageError(f"{config_path} sets no model: add model = \"/path/to/bundle\" or give MODEL")
    return config


def run_serve(model: str | None, config_path: str | None, inputs: tuple[str, ...], params: dict, *, check: bool,
              started: float) -> NoReturn:
    """Run the service until every source ended, Ctrl-C or SIGTERM; print the summary; exit with its code."""
    debug = params["debug"]
    echo = Echo()
    with exit_on_error(debug):
        config = _config(model, config_path, inputs, params)
        sources = build_sources(config.sources, started=started, reconnect_max=config.reconnect_max)
        if check:
            click.echo(config.describe())
            raise SystemExit(ExitCode.OK)
        m, out = config.model_options, config.output
        batch_size = max(8, len(sources)) if out.batch == "auto" else out.batch
        clf = Classifier(config.model, batch_size=batch_size, **m.classifier_kwargs())
        box = Box(config, clf, warn=lambda message: echo(message, err=True))
    reloader = None
    if m.reload:
        with exit_on_error(debug):
            try:
                reloader = HotReloader(clf, lambda record: echo.json(record, out.format), m.reload_interval).start()
            except BaseException:
                box.close()  # the broker gets its offline status, the health port closes
                raise
    stream = Stream(clf, sources, top_k=out.top_k, threshold=out.threshold, batch=out.batch, sinks=box.sinks,
                    capture=box.observer, reloader=reloader, stats=box.stats)
    closers = [stream.stop, *([reloader.stop] if reloader else []), box.close]
    print_stream(stream.results, fmt=out.format, echo=echo, with_ids=True, closers=closers,
                 with_regions=any(s.regions for s in config.sources),
                 failures=lambda: [*stream.failures, *box.failures()], debug=debug,
                 describe=lambda: f"{len(sources)} sources, {clf.format or clf.model_path.name} on {clf.backend}")
