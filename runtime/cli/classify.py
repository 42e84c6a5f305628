"""``edge-predict classify MODEL INPUTS…``: one source (files, folders, '-', a video, a camera or a watched folder)."""

from __future__ import annotations

from typing import NoReturn

import click

from ..classifier import Classifier
from ..cli_support import exit_on_error
from ..frames import camera_frames, file_frames, paced, video_frames, watch_frames
from ..inputs import expand_inputs
from ..reload import HotReloader
from ..stream import DEFAULT_SMOOTHING, Region, Smoothing, classify_stream
from ..stream.regions import check_regions
from .report import Echo, print_stream

__all__ = ["run_classify"]


def _frames(inputs, video, camera, watch, every, max_fps, watch_timeout, max_files, started):
    """The one frame iterator the options ask for."""
    chosen = [name for name, given in (("INPUTS", inputs), ("--video", video), ("--camera", camera),
                                       ("--watch", watch)) if given]
    if len(chosen) != 1 or len(video) + len(camera) + len(watch) > 1:
        raise click.UsageError("give exactly one of INPUTS, --video FILE, --camera INDEX or --watch DIR"
                               + (f" (got {', '.join(chosen)})" if chosen else "")
                               + "; for several sources at once use 'edge-predict serve'")
    if video:
        return paced(video_frames(video[0], every), max_fps)
    if camera:
        return paced(camera_frames(camera[0], every), max_fps, live=True)
    if watch:
        return paced(watch_frames(watch[0], idle_timeout=watch_timeout, max_files=max_files, since=started), max_fps)
    return paced(file_frames(expand_inputs(inputs)), max_fps)


def _smoothing(smoothing: str | None, window: int | None, hold: int | None) -> Smoothing | None:
    """classify prints state records only when asked: --smoothing ema|vote, or --window / --hold."""
    if smoothing == "off" or (smoothing is None and window is None and hold is None):
        return None
    default = DEFAULT_SMOOTHING
    return Smoothing(smoothing or default.method, window or default.window, hold or default.hold)


def run_classify(model: str, inputs: tuple[str, ...], *, video: tuple[str, ...], camera: tuple[int, ...],
                 watch: tuple[str, ...], every: int, max_fps: float | None, watch_timeout: float | None,
                 max_files: int | None, regions: tuple[str, ...], smoothing: str | None, window: int | None,
                 hold: int | None, top_k: int, threshold: float | None, fmt: str, batch: int | str,
                 hot_reload: bool, reload_interval: float, loader: dict, debug: bool, started: float) -> NoReturn:
    """Classify one source with ``Classifier(model, **loader)``; records on stdout, the summary on stderr, then exit."""
    batch = 1 if batch == "auto" else batch
    echo = Echo()
    with exit_on_error(debug):  # a model, video, camera or folder that cannot be opened: its error type's code
        parsed = check_regions([Region.parse(text) for text in regions])
        states = _smoothing(smoothing, window, hold)
        frames = _frames(inputs, video, camera, watch, every, max_fps, watch_timeout, max_files, started)
        clf = Classifier(model, batch_size=batch, **loader)
        reloader = HotReloader(clf, lambda record: echo.json(record, fmt), reload_interval).start() if hot_reload else None
    print_stream(lambda gate: classify_stream(clf, frames, top_k=top_k, threshold=threshold, batch=batch,
                                              reloader=reloader, gate=gate, regions=parsed, smoothing=states),
                 fmt=fmt, echo=echo, describe=lambda: f"{clf.format or clf.model_path.name} on {clf.backend}",
                 closers=[reloader.stop] if reloader else [], debug=debug, with_regions=bool(parsed))

