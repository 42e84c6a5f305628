"""Cheap, parallel checks of many image files before training (``--scan header``), or full decodes.

A full decode costs milliseconds per photo: an hour of start-up for a million frames. ``header``
reads what Pillow needs to name the format and the size (and refuses decompression bombs), then
looks for the format's end marker in the file's last KiB: a JPEG without ``FF D9`` or a PNG without
``IEND`` there is decoded in full, so truncated files are still caught here. Corrupt data that
only a decode can find is skipped and reported by the loader instead (``data.ImageListDataset``).

The threads overlap waits on the disk (a network disk for a large data set). With the files in the
page cache the check is Python work under the GIL, and 1, 2 or 4 threads scan alike (measured).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgeport.runtime.errors import ImageDecodeError, UsageError
from edgeport.runtime.preprocess import ALLOWED_FORMATS, load_image
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

__all__ = ["SCAN_MODES", "check_image", "check_images", "usable_images", "scan_threads"]

SCAN_MODES = ("header", "full")
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL_BYTES = 1024
#: Above this many files a scan shows a progress bar.
_PROGRESS_FROM = 2000
_CHUNK = 128


def _has_end_marker(fh, marker: bytes) -> bool:
    fh.seek(0, os.SEEK_END)
    fh.seek(max(0, fh.tell() - _TAIL_BYTES))
    return marker in fh.read()


def _header_reason(path: Path) -> str | None:
    """Why ``path`` is not a usable image judged from its header and tail, or None."""
    with open(path, "rb") as fh:  # one open for the header and the tail
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fh, formats=ALLOWED_FORMATS)  # the runtime's allow-list: EPS named .jpg never opens
                width, height = img.size
                fmt = img.format
        except UnidentifiedImageError:
            what = ("empty file (0 bytes)" if path.stat().st_size == 0
                    else f"not an image in an accepted format ({', '.join(ALLOWED_FORMATS)})")
            return f"{what}; remove it or replace it with a JPEG/PNG"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return f"refused as a possible decompression bomb ({exc}); downscale the image first"
        except (OSError, SyntaxError, ValueError) as exc:
            return f"corrupt image header ({exc}); re-encode or remove it"
        if width < 1 or height < 1:
            return f"image has no pixels ({width}×{height}); remove it"
        marker = _END_MARKERS.get(fmt or "")
        if marker is None or _has_end_marker(fh, marker):
            return None
    return _decode_reason(path)  # possibly truncated: only a decode can tell


def _decode_reason(path: Path) -> str | None:
    try:
        load_image(path)
    except ImageDecodeError as exc:
        return exc.reason
    return None


def check_image(path: str | os.PathLike, mode: str = "header") -> str | None:
    """Why the file cannot be trained on, or None. ``mode``: ``header`` (cheap) or ``full`` (decode)."""
    if mode not in SCAN_MODES:
        raise UsageError(f"--scan must be one of {', '.join(SCAN_MODES)}, got {mode!r}")
    path = Path(path)
    try:
        return _header_reason(path) if mode == "header" else _decode_reason(path)
    except OSError as exc:  # unreadable: permissions, a vanished file on a network disk
        return f"cannot read the file ({exc})"


def scan_threads() -> int:
    """Threads for a scan: checks wait on the disk (and Pillow's decoder releases the GIL), so more than the cores."""
    return min(32, 2 * (os.cpu_count() or 1))


def check_images(paths: list[Path], mode: str = "header", threads: int | None = None,
                 progress: bool = True) -> list[str | None]:
    """``check_image`` of every path, in order, on ``threads`` threads (a bar from 2 000 files)."""
    if mode not in SCAN_MODES:
        raise UsageError(f"--scan must be one of {', '.join(SCAN_MODES)}, got {mode!r}")
    threads = threads or scan_threads()
    if threads == 1 or len(paths) < 2:
        return [check_image(p, mode) for p in paths]
    # Chunks, not one task per file: a thread-pool task costs about as much as a header check.
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    out: list[str | None] = []
    with ThreadPoolExecutor(threads) as pool, \
            tqdm(total=len(paths), desc=f"scan ({mode})", unit="file", leave=False,
                 disable=not progress or len(paths) < _PROGRESS_FROM) as bar:
        for part in pool.map(lambda chunk: [check_image(p, mode) for p in chunk], chunks):
            out += part
            bar.update(len(part))
    return out


def usable_images(candidates: list[Path], mode: str, skipped: list[dict[str, str]]) -> list[Path]:
    """The candidates that pass ``check_images``; every other one goes to ``skipped`` with its reason."""
    good = []
    for path, reason in zip(candidates, check_images(candidates, mode)):
        if reason is None:
            good.append(path)
        else:
            skipped.append({"path": str(path), "reason": reason})
    return good
