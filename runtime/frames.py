"""Where frames come from: files, a video file, a camera, or a folder being watched.

Every source is one iterator of ``Frame`` items, so the classifier and the CLI treat a folder of
JPEGs and a live camera the same way. OpenCV (the ``[camera]`` extra) is imported only by the
video and camera sources; its frames are BGR and are labelled so (``color="bgr"``).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import FrameSourceError, MissingDependencyError
from .inputs import IMAGE_SUFFIXES, InputItem
from .preprocess import ImageInput
from .redact import redact_url

__all__ = ["Frame", "file_frames", "video_frames", "camera_frames", "url_frames", "watch_frames", "paced", "is_url"]


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
    source_id: str | None = None  # the service's name for the source (``--name cam1=…``), carried into every record
    region: str | None = None  # a named region of the source's picture (``stream.regions``): this frame is its crop


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
    # A video file's container says how many frames it holds; reading fewer means a truncated or corrupt file
    # (OpenCV just stops, so without this a half-copied video ends "successfully"). Cameras report none.
    expected = int(capture.get(_cv2().CAP_PROP_FRAME_COUNT) or 0) if clock == "video" else 0
    try:
        while True:
            if index % every:
                if not capture.grab():
                    break
                index += 1
                continue
            ok, frame = capture.read()
            if not ok:
                break
            if clock == "video":
                stamp = capture.get(_cv2().CAP_PROP_POS_MSEC) / 1000.0
            else:
                stamp = time.monotonic() - start
            yield Frame(source, frame, color="bgr", index=index, timestamp=round(stamp, 3))
            index += 1
        if 0 < index < expected:
            yield Frame(source, index=index, error=f"the video ended after {index} of the {expected} frames its container "
                                                   "lists: the file is truncated or corrupt; copy or re-encode it again")
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


#: How long OpenCV's FFmpeg backend waits to open a network stream, and for its next frame, before it gives up
#: (its defaults wait for a long time, so a stopped RTSP/HTTP server would hang the source instead of reconnecting).
URL_TIMEOUT_MS = 5000


def is_url(source: str) -> bool:
    """A network stream (``rtsp://``, ``http://`` …) rather than a video file."""
    return "://" in source


def url_frames(url: str, every: int = 1, timeout_ms: int = URL_TIMEOUT_MS) -> Iterator[Frame]:
    """Live frames of a network stream (RTSP, HTTP MJPEG … anything OpenCV's FFmpeg backend opens), BGR,
    until it stops delivering."""
    cv2 = _cv2()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    shown = redact_url(url)  # what records and messages carry: never the stream's password
    if not capture.isOpened():
        capture.release()
        raise FrameSourceError(f"{shown}: OpenCV cannot open this stream; check the URL and that the server is up")
    return _capture_frames(capture, shown, every, clock="wall")


#: A watched file is read once its size and mtime stayed the same for this long (a writer pausing longer
#: than this mid-file is caught by ``WATCH_RECHECK_S``).
WATCH_SETTLE_S = 1.0
#: A file already classified is still checked this long; if it changes again (a slow writer resumed), it is
#: classified again once it settles. Older files cost nothing per poll.
WATCH_RECHECK_S = 30.0
#: A folder modified this recently is listed again even if its mtime looks unchanged: file-system timestamps
#: are coarse (a kernel tick), so a file created in the same tick as the last listing would otherwise be missed.
_FRESH_DIR_S = 2.0


def _signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file; None when it vanished or is not a regular file."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


class _FolderScanner:
    """New files under a folder, found incrementally: a folder is listed again only when its own mtime
    changed (or is recent), so an idle watch over thousands of old files costs one stat per folder per poll."""

    def __init__(self, root: Path):
        self.root = root
        self.dirs: dict[Path, int] = {}
        self.known: set[Path] = set()

    def poll(self) -> list[Path]:
        """Files that appeared since the last poll (the first poll returns every file)."""
        try:
            if not stat.S_ISDIR(self.root.stat().st_mode):
                raise FileNotFoundError(self.root)
        except OSError as exc:
            raise FrameSourceError(f"{self.root}: the watched folder disappeared or is no longer a folder; "
                                   "recreate it and start edge-predict again") from exc
        new: list[Path] = []
        todo = [self.root] if not self.dirs else list(self.dirs)
        while todo:
            folder = todo.pop()
            try:
                mtime = folder.stat().st_mtime_ns
            except OSError:  # a sub-folder was removed: forget it and what was under it
                self.dirs = {d: m for d, m in self.dirs.items() if d != folder and folder not in d.parents}
                self.known = {f for f in self.known if folder not in f.parents}
                continue
            if self.dirs.get(folder) == mtime and time.time() - mtime / 1e9 > _FRESH_DIR_S:
                continue
            try:
                entries = list(os.scandir(folder))
            except OSError:  # e.g. no file descriptor left: the mtime stays unrecorded, so the next poll lists it again
                continue
            self.dirs[folder] = mtime
            for entry in entries:
                path = Path(entry.path)
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if path not in self.dirs:
                            todo.append(path)
                        continue
                except OSError:
                    continue
                if path not in self.known:
                    self.known.add(path)
                    new.append(path)
        return new


def watch_frames(
    folder: str | Path,
    idle_timeout: float | None = None,
    max_files: int | None = None,
    poll_s: float = 0.1,
    since: float | None = None,
    settle_s: float = WATCH_SETTLE_S,
) -> Iterator[Frame]:
    """Image files that appear in ``folder`` (recursively) once the watch started, in name order.

    "Appeared" means modified at or after ``since`` (a ``time.time()``; default: now), or created later,
    so a file written while the model was still loading is not missed. A file is yielded once its size and
    mtime stayed the same for ``settle_s`` seconds, so a half-written file is not read; if it changes again
    within ``WATCH_RECHECK_S`` it is yielded again once it settles. Files that vanish are dropped. Stops
    after ``max_files`` files or ``idle_timeout`` seconds without a new one (or Ctrl-C); a watched folder
    that disappears raises ``FrameSourceError``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FrameSourceError(f"{folder}: not a folder; --watch needs an existing directory")
    since = time.time() if since is None else since
    scanner = _FolderScanner(root)
    pending: dict[Path, tuple[tuple[int, int], float]] = {}  # path → (signature, when it last changed)
    recent: dict[Path, tuple[tuple[int, int], float]] = {}  # path → (signature yielded, when)
    first, count, last_new = True, 0, time.monotonic()
    while max_files is None or count < max_files:
        now = time.monotonic()
        for path in scanner.poll():
            if path.suffix.lower() not in IMAGE_SUFFIXES or (sig := _signature(path)) is None:
                continue
            if first and sig[1] < since * 1e9:
                if sig[1] >= (since - WATCH_RECHECK_S) * 1e9:  # written just before: read it if it changes again
                    recent[path] = (sig, now)
                continue  # there before the watch started
            pending[path] = (sig, now)
        first = False
        for path, (sig, when) in list(recent.items()):
            current = _signature(path)
            if current is None or now - when > WATCH_RECHECK_S:
                del recent[path]
            elif current != sig:  # written again after it was read: read it again once it settles
                del recent[path]
                pending[path] = (current, now)
        ready = []
        for path, (sig, changed) in list(pending.items()):
            current = _signature(path)
            if current is None:  # vanished (or replaced by something that is not a file): forget it
                del pending[path]
            elif current != sig:
                pending[path] = (current, now)
            elif now - changed >= settle_s:
                ready.append(path)
        for path in sorted(ready):
            recent[path] = (pending.pop(path)[0], time.monotonic())
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
