"""``--capture DIR``: keep the frames the model was unsure about, the ones worth labelling for the next model.

A frame is kept when its top-1 probability is below ``below`` or its top-1/top-2 margin below ``margin``, at most
``rate`` per minute per source, as ``DIR/<source id>/<UTC time>_<frame>.jpg`` plus a ``.json`` sidecar (source,
time, top-k, model sha256, why). The folder stays under ``max_mb``: the oldest captures are deleted first. A person
sorts the JPEGs into ``<dataset>/train/<class>/`` folders and ``edge-train`` reads them (docs/service.md).
"""

from __future__ import annotations

import io
import json
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write_bytes
from ..errors import UsageError
from ..frames import Frame
from ..records import StreamResult, clean_text

__all__ = ["Capture"]


class Capture:
    def __init__(self, folder: str | Path, below: float | None = 0.5, margin: float | None = None, rate: float = 6.0,
                 max_mb: float = 500.0, model_sha256: str | None = None, quality: int = 90):
        if below is None and margin is None:
            raise UsageError("--capture needs --capture-below P and/or --capture-margin M: which frames count as unsure")
        self.folder, self.below, self.margin, self.rate = Path(folder), below, margin, rate
        self.max_bytes, self.model_sha256, self.quality = int(max_mb * 1024 * 1024), model_sha256, quality
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--capture {folder}: cannot create the folder ({exc.strerror})") from exc
        self._recent: dict[str, deque[float]] = {}
        self.saved, self.deleted = 0, 0
        # What is there already counts against the quota, oldest first (captures of an earlier run too).
        existing = sorted(self.folder.glob("*/*.jpg"), key=lambda p: p.stat().st_mtime)
        self._files: deque[tuple[Path, int]] = deque((p, self._size(p)) for p in existing)
        self._total = sum(size for _, size in self._files)

    @staticmethod
    def _size(jpeg: Path) -> int:
        sidecar = jpeg.with_suffix(".json")
        return jpeg.stat().st_size + (sidecar.stat().st_size if sidecar.exists() else 0)

    def why(self, result: StreamResult) -> str | None:
        """Why this result is worth a look (``below`` or ``margin``), or None."""
        if not result.ok or not result.top:
            return None
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
        """Keep ``frame`` if the model was unsure and the source's rate allows; the JPEG's path, or None."""
        reason = self.why(result)
        source_id = result.source_id or "default"
        if reason is None or not self._allowed(source_id):
            return None
        picture = _picture(frame)
        if picture is None:
            return None
        now = datetime.now(timezone.utc)
        stem = now.strftime("%Y%m%dT%H%M%S.%fZ") + (f"_{frame.index}" if frame.index is not None else "")
        folder = self.folder / source_id
        folder.mkdir(exist_ok=True)
        jpeg = folder / f"{stem}.jpg"

        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=self.quality)
        sidecar = {"source_id": source_id, "source": clean_text(result.source), "frame": frame.index,
                   "timestamp": frame.timestamp, "time": now.isoformat(timespec="milliseconds"), "reason": reason,
                   "label": result.label, "top_k": [{"label": label, "score": round(score, 6)} for label, score in result.top],
                   "model_sha256": self.model_sha256}
        text = json.dumps(sidecar, ensure_ascii=False, indent=1).encode()
        atomic_write_bytes(jpeg.with_suffix(".json"), lambda fh: fh.write(text))  # the sidecar first: a JPEG always has one
        atomic_write_bytes(jpeg, lambda fh: fh.write(buffer.getvalue()))
        size = self._size(jpeg)
        self._files.append((jpeg, size))
        self._total += size
        self.saved += 1
        while self._total > self.max_bytes and self._files:
            old, old_size = self._files.popleft()
            for path in (old, old.with_suffix(".json")):
                path.unlink(missing_ok=True)
            self._total -= old_size
            self.deleted += 1
        return jpeg if jpeg.exists() else None


def _picture(frame: Frame) -> Image.Image | None:
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
