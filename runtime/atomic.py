"""Atomic writes: a temp file (or folder) beside the target, then a rename, so a killed process
never leaves half a checkpoint or model behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write_bytes", "public_mode"]


def public_mode(mode: int) -> int:
    """``mode`` under the process umask: mkstemp/mkdtemp make 0600/0700, shipped artefacts should not be."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write_bytes(path: Path, writer: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, public_mode(0o666))
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
