"""The review page's folders: the captured frames it lists, and the dataset it labels them into.

A label moves a capture into the trainer's layout: ``DATASET/<class>/<source>_<capture name>.jpg`` and one row
``path,label`` in ``DATASET/<labels csv>`` (``edge-train DATASET`` reads the folders, ``--labels-csv`` the CSV).
"unknown" keeps the frame out of training, in ``DATASET/.unknown/`` (the trainer skips dot folders); "delete" removes
it. Each step is atomic and in this order: the labelled copy, the CSV (rewritten whole), then the capture pair is
removed. A service stopped between two steps leaves the capture in place, and labelling it again gives the same
file and the same row: nothing captured is lost and nothing is counted twice.

Only names that capture itself writes are accepted (a source id, then ``CAPTURE_NAME``), no path from a request is
joined before it matched, and only pairs capture owns (regular files, a marked sidecar, no symlink on the way) are
read, moved or deleted: ``..``, URL-encoded separators and planted symlinks all end as "no such capture".
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from ..atomic import atomic_write_bytes
from ..errors import UsageError
from .capture import CAPTURE_NAME, owned_bytes

__all__ = ["ReviewStore", "Refused", "UNKNOWN_FOLDER", "UNKNOWN", "DELETE"]

UNKNOWN, DELETE = "unknown", "delete"
#: Where frames marked "unknown" go inside the dataset: a dot folder, which the trainer's folder scan skips.
UNKNOWN_FOLDER = ".unknown"
_SOURCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # stream.sources' id rule: one path component, no dots
_LISTED = 500  # captures listed at most, newest first


class Refused(Exception):
    """A request the store will not carry out: ``status`` is the HTTP status, the message says why and what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _no_symlink(path: Path) -> bool:
    try:
        return not stat.S_ISLNK(path.lstat().st_mode)
    except OSError:
        return False


def _unusable(classes: Sequence[str]) -> list[str]:
    """The classes that cannot be a folder of the dataset: reserved names, dot names, paths, empty."""
    return [c for c in classes if c in (UNKNOWN, DELETE) or c.startswith(".") or "/" in c or "\\" in c or not c]


class ReviewStore:
    """``classes``: the labels the page offers, or a function giving them. The box passes ``lambda: clf.labels``,
    so after a hot reload to a model with other labels the page offers the labels of the model now serving."""

    def __init__(self, capture_dir: str | Path, dataset: str | Path,
                 classes: Sequence[str] | Callable[[], Sequence[str]], labels_csv: str = "labels.csv"):
        self._classes = classes if callable(classes) else (lambda fixed=tuple(classes): fixed)
        bad = _unusable(self._classes())
        if bad:
            raise UsageError(f"--ui-port: the model's classes {bad} cannot be folders of the dataset (reserved or a path); "
                             "rename them when training")
        self.capture_dir, self.dataset = Path(capture_dir), Path(dataset)
        self.csv_path = self.dataset / labels_csv
        self._lock = threading.Lock()  # one label at a time: the CSV is read, changed and replaced whole
        self.done = {UNKNOWN: 0, DELETE: 0}

    @property
    def classes(self) -> tuple[str, ...]:
        """The labels on offer now. A reloaded model's class that cannot be a folder is left out, not refused: the
        swap has happened, and the page must still label into the classes that can."""
        now = tuple(self._classes())
        bad = set(_unusable(now))
        return tuple(c for c in now if c not in bad)

    # ---- what the page shows -------------------------------------------------------------------------------------
    def captures(self, limit: int = _LISTED) -> list[dict[str, Any]]:
        """The captures waiting for a label, newest first: source, name, time, why, the model's top-k."""
        found = []
        try:
            folders = [e for e in os.scandir(self.capture_dir) if e.is_dir(follow_symlinks=False) and _SOURCE.match(e.name)]
        except OSError:
            return []
        for folder in folders:
            try:
                names = [e.name for e in os.scandir(folder.path) if CAPTURE_NAME.match(e.name)]
            except OSError:
                continue
            found += [(name, folder.name) for name in names]
        found.sort(reverse=True)
        out = []
        for name, source in found:
            if len(out) >= limit:
                break
            jpeg = self.capture_dir / source / name
            if owned_bytes(jpeg) is None:
                continue
            try:
                side = json.loads(jpeg.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append({"source": source, "name": name, "time": side.get("time"), "reason": side.get("reason"),
                        "top_k": [t for t in side.get("top_k", []) if isinstance(t, dict)][:3]})
        return out

    def counts(self) -> dict[str, int]:
        """Frames per class in the dataset (what training will see), plus this run's unknown and deleted."""
        counts = {}
        for c in self.classes:  # the serving model's classes: a class a reload dropped is no longer counted
            folder = self.dataset / c
            try:
                counts[c] = sum(1 for e in os.scandir(folder) if e.is_file(follow_symlinks=False) and e.name.endswith(".jpg"))
            except OSError:
                counts[c] = 0
        return {**counts, **self.done}

    # ---- what the page does --------------------------------------------------------------------------------------
    def capture_path(self, source: str, name: str) -> Path:
        """The JPEG of capture ``source``/``name``, checked to be one capture wrote; else Refused(404)."""
        if not (isinstance(source, str) and isinstance(name, str) and _SOURCE.match(source) and CAPTURE_NAME.match(name)):
            raise Refused(404, "no such capture: a capture is <source id>/<UTC time>_<frame>.jpg as the grid lists it")
        folder = self.capture_dir / source
        jpeg = folder / name
        if not (_no_symlink(folder) and owned_bytes(jpeg) is not None):
            raise Refused(404, f"no such capture: {source}/{name} (labelled, deleted or expired already?)")
        return jpeg

    def read(self, source: str, name: str) -> bytes:
        return self.capture_path(source, name).read_bytes()

    def label(self, source: Any, name: Any, label: Any) -> dict[str, Any]:
        """Label one capture with a class, ``unknown`` or ``delete``; the new counts."""
        allowed = (*self.classes, UNKNOWN, DELETE)
        if not isinstance(label, str) or label not in allowed:
            raise Refused(400, f"label {str(label)[:40]!r} is not one of the model's classes, {UNKNOWN!r} or {DELETE!r}: "
                               f"{', '.join(allowed)}")
        with self._lock:
            jpeg = self.capture_path(source, name)
            if label != DELETE:
                folder = self.dataset / (UNKNOWN_FOLDER if label == UNKNOWN else label)
                if folder.is_symlink() or (self.dataset.exists() and not self.dataset.is_dir()):
                    raise Refused(409, f"{folder} is a symlink or not a folder: the page writes only into folders of its "
                                       "own; fix the dataset folder")
                target = folder / f"{source}_{name}"
                data = jpeg.read_bytes()
                atomic_write_bytes(target, lambda fh: fh.write(data))
                if label != UNKNOWN:
                    self._write_row(f"{label}/{target.name}", label)
            for path in (jpeg, jpeg.with_suffix(".json")):  # last: until here the capture is still there to redo
                path.unlink(missing_ok=True)
            if label in self.done:
                self.done[label] += 1
        return {"labelled": f"{source}/{name}", "label": label, "counts": self.counts()}

    def _write_row(self, path: str, label: str) -> None:
        """``path,label`` into the CSV (a row for the same path replaced), written whole and atomically."""
        rows: list[list[str]] = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                rows = [row for row in csv.reader(fh)][1:]
        rows = [row for row in rows if row and row[0] != path] + [[path, label]]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
        data = text.getvalue().encode()
        atomic_write_bytes(self.csv_path, lambda fh: fh.write(data))
