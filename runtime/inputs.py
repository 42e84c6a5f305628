"""Expand the command line's INPUT arguments into an ordered list of image sources."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

__all__ = ["IMAGE_SUFFIXES", "InputItem", "expand_inputs", "iter_image_files"]

#: Suffixes picked up when walking a folder; files named explicitly are always tried.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass(frozen=True)
class InputItem:
    """One thing to classify, or one input that already failed before decoding (``error`` set)."""

    source: str
    error: str | None = None


def iter_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in a stable sorted order; hidden entries skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def expand_inputs(args: Iterable[str], stdin: TextIO | None = None) -> list[InputItem]:
    """Files stay as given, folders expand to their images, ``-`` reads one path per line from stdin."""
    items: list[InputItem] = []
    for arg in args:
        if arg == "-":
            lines = (stdin or sys.stdin).read().splitlines()
            items.extend(expand_inputs([line.strip() for line in lines if line.strip()]))
            continue
        path = Path(arg)
        if path.is_dir():
            files = iter_image_files(path)
            if not files:
                items.append(InputItem(arg, f"no images found in folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"))
            items.extend(InputItem(str(f)) for f in files)
        elif path.is_file():
            items.append(InputItem(arg))
        elif path.exists():  # a FIFO would block the whole run, a device would never end
            items.append(InputItem(arg, "not a regular file (a FIFO, device or socket); only regular files are read"))
        else:
            items.append(InputItem(arg, "no such file or folder; check the path"))
    return items
