"""Where frames come from: files, a video file, a camera, or a folder being watched.

Every source is one iterator of ``Frame`` items, so the classifier and the CLI treat a folder of
JPEGs and a live camera the same way. OpenCV (the ``[camera]`` extra) is imported only by the
video and camera sources; its frames are BGR and are labelled so (``color="bgr"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import FrameSourceError, MissingDependencyError
from .inputs import IMAGE_SUFFIXES, InputItem
from .preprocess import ImageInput

__all__ = ["Frame", "file_frames", "video_frames", "camera_frames", "watch_frames", "paced"]


@dataclass(frozen=True)
class Frame:
    """One image to classify: ``source`` names it (a path, or ``video.avi`` / ``camera:0`` with
    ``index`` and ``timestamp`` in seconds); ``error`` is set when it failed before decoding."""

    source: str
    image: ImageInput | None = None
    color: str | None = None
    index: int | None = None
    timestamp: float | None = None
    error: str | None = None


def file_frames(items: Iterable[InputItem]) -> Iterator[Frame]:
    """Command-line files (already expanded) as frames; decoding happens in the classifier."""
    for item in items:
        yield Frame(item.source, None if item.error else item.source, error=item.error)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError("video and camera input need OpenCV: pip install 'edgeport[camera]'") from exc
    return cv2


def _capture_frames(capture: Any, source: str, every: int, clock: str) -> Iterator[Frame]:
    """Read ``capture`` to its end, keeping every ``every``-th frame; skipped frames are only
    grabbed, not decoded. ``clock``: ``"video"`` (position in the file) or ``"wall"`` (since start)."""
    start, index = time.monotonic(), 0
    try:
        while True:
            if index % every:
                if not capture.grab():
                    return
                index += 1
                continue
            ok, frame = capture.read()
            if not ok:
                return
            if clock == "video":
                stamp = capture.get(_cv2().CAP_PROP_POS_MSEC) / 1000.0
            else:
                stamp = time.monotonic() - start
            yield Frame(source, frame, color="bgr", index=index, timestamp=round(stamp, 3))
            index += 1
    finally:
        capture.release()


def video_frames(path: str | Path, every: int = 1) -> Iterator[Frame]:
    """The frames of a video file (anything OpenCV's FFmpeg backend reads), BGR."""
    cv2 = _cv2()
    if not Path(path).is_file():
        raise FrameSourceError(f"{path}: no such video file; check the path")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise FrameSourceError(f"{path}: OpenCV cannot open this video; re-encode it (e.g. MJPG .avi or H.264 .mp4)")
    return _capture_frames(capture, str(path), every, clock="video")


def camera_frames(index: int, every: int = 1) -> Iterator[Frame]:
    """Live frames of camera ``index`` (``cv2.VideoCapture(index)``) until it stops delivering."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        capture.release()
        raise FrameSourceError(f"camera {index}: OpenCV cannot open it; check the index and that no other program uses it")
    return _capture_frames(capture, f"camera:{index}", every, clock="wall")


def watch_frames(
    folder: str | Path,
    idle_timeout: float | None = None,
    max_files: int | None = None,
    poll_s: float = 0.1,
    since: float | None = None,
) -> Iterator[Frame]:
    """Image files that appear in ``folder`` (recursively) once the watch started, in name order.

    "Appeared" means modified at or after ``since`` (a ``time.time()``; default: now), so a file
    written while the model was still loading is not missed. A file is yielded once its size stayed
    the same over one poll, so a half-written file is not read. Stops after ``max_files`` files or
    ``idle_timeout`` seconds without a new one (or Ctrl-C).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FrameSourceError(f"{folder}: not a folder; --watch needs an existing directory")
    since = time.time() if since is None else since
    seen = {p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime < since}
    pending: dict[Path, int] = {}
    count, last_new = 0, time.monotonic()
    while max_files is None or count < max_files:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in seen):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            size = path.stat().st_size
            if pending.get(path) != size:  # new, or still growing: look again next poll
                pending[path] = size
                continue
            seen.add(path)
            del pending[path]
            count, last_new = count + 1, time.monotonic()
            yield Frame(str(path), str(path))
            if max_files is not None and count >= max_files:
                return
        if idle_timeout is not None and not pending and time.monotonic() - last_new > idle_timeout:
            return
        time.sleep(poll_s)


def paced(frames: Iterable[Frame], max_fps: float | None, live: bool = False) -> Iterator[Frame]:
    """At most ``max_fps`` frames per second: a live source drops the frames in between (so the
    one classified is fresh), a file source waits."""
    if not max_fps:
        yield from frames
        return
    interval, next_at = 1.0 / max_fps, time.monotonic()
    for frame in frames:
        now = time.monotonic()
        if now < next_at:
            if live:
                continue
            time.sleep(next_at - now)
        next_at = max(next_at, time.monotonic()) + interval
        yield frame
