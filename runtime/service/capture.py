"""``--capture DIR``: keep the frames the model was unsure about, the ones worth labelling for the next model.

A frame is kept when the model's "unknown" rule flags it, its top-1 probability is below ``below`` or its top-1/top-2
margin below ``margin``, at most ``rate`` per minute per source, as ``DIR/<source id>/<UTC time>_<frame>.jpg`` plus a
``.json`` sidecar (source, time, top-k, model sha256, why). The folder stays under ``max_mb``: the oldest captures are
deleted first. A person sorts the JPEGs into ``<dataset>/train/<class>/`` folders and ``edge-train`` reads them
(docs/service.md).

What capture owns, and only that, counts against the quota and may be deleted: a JPEG whose name has capture's
pattern and whose sidecar carries ``CAPTURE_MARK``, found without following a symlink. A folder that also holds a
dataset's photos (or is a symlink to one) loses none of them. A capture that fails to write (a full disk, a
read-only mount) never stops classification: it is reported (``on_error``), pauses for ``RETRY_S`` seconds (so a
full disk gives one report a minute, not one a frame), then tries again; a half-written pair is removed.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..atomic import atomic_write_bytes
from ..errors import UsageError
from ..frames import Frame
from ..records import StreamResult, clean_text

__all__ = ["Capture", "CAPTURE_MARK", "CAPTURE_NAME", "RETRY_S", "frame_picture", "owned_bytes"]

#: The sidecar key that says "capture wrote this pair" (its value: the sidecar format's version).
CAPTURE_MARK = "edgeport_capture"
#: Seconds capture pauses after a failed write before it tries again.
RETRY_S = 60.0
#: A capture JPEG's name: its UTC time, frame index and region (nothing a request could use to leave the folder).
CAPTURE_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z(_\d+)?(_[A-Za-z0-9_-]{1,64})?\.jpg$")


def _regular(path: Path) -> os.stat_result | None:
    """``path``'s lstat when it is a regular file (not a symlink), else None."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def owned_bytes(jpeg: Path) -> int | None:
    """The bytes of a capture pair that capture wrote (name pattern, regular files, marked sidecar), else None."""
    if not CAPTURE_NAME.match(jpeg.name):
        return None
    sidecar = jpeg.with_suffix(".json")
    picture, side = _regular(jpeg), _regular(sidecar)
    if picture is None or side is None or side.st_size > 64 * 1024:
        return None
    try:
        marked = CAPTURE_MARK in json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    return picture.st_size + side.st_size if marked else None


class Capture:
    def __init__(self, folder: str | Path, below: float | None = 0.5, margin: float | None = None, rate: float = 6.0,
                 max_mb: float = 500.0, model_sha256: str | None = None, quality: int = 90,
                 on_error: Callable[[str], None] | None = None):
        if below is None and margin is None:
            raise UsageError("--capture needs --capture-below P and/or --capture-margin M: which frames count as unsure")
        self.folder, self.below, self.margin, self.rate = Path(folder), below, margin, rate
        self.max_bytes, self.model_sha256, self.quality = int(max_mb * 1024 * 1024), model_sha256, quality
        self.on_error = on_error
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--capture {folder}: cannot create the folder ({exc.strerror})") from exc
        self._recent: dict[str, deque[float]] = {}
        self.saved, self.deleted, self.failed = 0, 0, 0
        self.last_error: str | None = None
        self._paused_until = 0.0
        # What capture wrote before (an earlier run) counts against the quota, oldest first; nothing else does.
        found = [(p, size) for p in self._candidates() if (size := owned_bytes(p)) is not None]
        found.sort(key=lambda item: item[0].lstat().st_mtime)
        self._files: deque[tuple[Path, int]] = deque(found)
        self._total = sum(size for _, size in self._files)

    def _candidates(self) -> list[Path]:
        """JPEGs one level down, per source folder, without following a symlink (to a folder or a file)."""
        out = []
        try:
            with os.scandir(self.folder) as top:
                folders = [Path(e.path) for e in top if e.is_dir(follow_symlinks=False)]
            for folder in folders:
                with os.scandir(folder) as entries:
                    out += [Path(e.path) for e in entries if e.is_file(follow_symlinks=False) and e.name.endswith(".jpg")]
        except OSError:
            pass
        return out

    @staticmethod
    def _size(jpeg: Path) -> int:
        sidecar = jpeg.with_suffix(".json")
        return jpeg.stat().st_size + (sidecar.stat().st_size if sidecar.exists() else 0)

    def why(self, result: StreamResult) -> str | None:
        """Why this result is worth a look (the model's "unknown" rule, ``below`` or ``margin``), or None."""
        if not result.ok or not result.top:
            return None
        if result.unknown:  # what the model has not seen: the frames the next model most needs labelled
            return f"unknown (score {result.ood_score:.4g} below the model's threshold)"
        top1 = result.top[0][1]
        if self.below is not None and top1 < self.below:
            return f"top-1 {top1:.3f} < {self.below}"
        if self.margin is not None and len(result.top) > 1 and top1 - result.top[1][1] < self.margin:
            return f"top-1/top-2 margin {top1 - result.top[1][1]:.3f} < {self.margin}"
        return None

    def _allowed(self, source_id: str) -> bool:
        now, recent = time.monotonic(), self._recent.setdefault(source_id, deque())
        while recent and now - recent[0] > 60.0:
            recent.popleft()
        if len(recent) >= self.rate:
            return False
        recent.append(now)
        return True

    def consider(self, frame: Frame, result: StreamResult) -> Path | None:
        """Keep ``frame`` if the model was unsure and the source's rate allows; the JPEG's path, or None.
        A failed write is reported and pauses capture; it never raises into the stream."""
        reason = self.why(result)
        source_id = result.source_id or "default"
        if reason is None or time.monotonic() < self._paused_until or not self._allowed(source_id):
            return None
        picture = frame_picture(frame)
        if picture is None:
            return None
        now = datetime.now(timezone.utc)
        stem = now.strftime("%Y%m%dT%H%M%S.%fZ") + (f"_{frame.index}" if frame.index is not None else "") + (
            f"_{result.region}" if result.region else "")  # a region's crop: the regions of one frame never share a name
        folder = self.folder / source_id
        jpeg = folder / f"{stem}.jpg"
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=self.quality)
        sidecar = {CAPTURE_MARK: 1, "source_id": source_id, "region": result.region, "source": clean_text(result.source),
                   "frame": frame.index,
                   "timestamp": frame.timestamp, "time": now.isoformat(timespec="milliseconds"), "reason": reason,
                   "label": result.label, "top_k": [{"label": label, "score": round(score, 6)} for label, score in result.top],
                   "model_sha256": self.model_sha256,
                   **({"unknown": result.unknown, "ood_score": result.ood_score} if result.unknown is not None else {})}
        text = json.dumps(sidecar, ensure_ascii=False, indent=1).encode()
        try:
            if folder.is_symlink():
                raise OSError(f"{folder} is a symlink; capture writes only into folders of its own")
            folder.mkdir(exist_ok=True)
            atomic_write_bytes(jpeg.with_suffix(".json"), lambda fh: fh.write(text))  # sidecar first: a JPEG always has one
            atomic_write_bytes(jpeg, lambda fh: fh.write(buffer.getvalue()))
            size = self._size(jpeg)
        except OSError as exc:
            for path in (jpeg, jpeg.with_suffix(".json")):  # no orphan: a sidecar without its JPEG is removed
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            self._failed(f"capture to {folder} failed ({exc.strerror or exc}); classification goes on, capture retries "
                         f"in {RETRY_S:.0f} s (free space, or point --capture at a writable folder)")
            return None
        self._files.append((jpeg, size))
        self._total += size
        self.saved += 1
        while self._total > self.max_bytes and self._files:
            old, old_size = self._files.popleft()
            for path in (old, old.with_suffix(".json")):
                if _regular(path) is not None:  # never a symlink planted in place of a capture
                    try:
                        path.unlink()
                    except OSError:
                        pass
            self._total -= old_size
            self.deleted += 1
        return jpeg if jpeg.exists() else None

    def _failed(self, message: str) -> None:
        self.failed += 1
        self.last_error = message
        self._paused_until = time.monotonic() + RETRY_S
        if self.on_error is not None:
            self.on_error(message)


def frame_picture(frame: Frame) -> Image.Image | None:
    """The frame as an RGB picture: an OpenCV array (BGR), an RGB array, a path or a PIL image."""
    image = frame.image
    if isinstance(image, np.ndarray):
        array = image[..., ::-1] if frame.color == "bgr" and image.ndim == 3 else image
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                return opened.convert("RGB")
        except OSError:
            return None
    return None
