"""The bundle's ``manifest.json``: its one reader and one writer (export writes through it, the runtime
and edge-bench read through it), the schema version both sides agree on, and the file hashes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import ModelLoadError

__all__ = ["MANIFEST_NAME", "LABELS_NAME", "MANIFEST_SCHEMA_VERSION", "sha256_file", "read_manifest", "write_json",
           "file_entries"]

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
#: Bumped whenever a manifest field changes meaning or disappears; the reader refuses newer ones.
MANIFEST_SCHEMA_VERSION = 1


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The manifest of ``bundle_dir``, with its schema version checked."""
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{bundle_dir} has no {MANIFEST_NAME}; pass a bundle written by edge-export or an .onnx file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is unreadable ({exc}); re-run edge-export") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not isinstance(data.get("formats"), dict):
        raise ModelLoadError(f"{path} lacks 'files'/'formats'; re-run edge-export")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MANIFEST_SCHEMA_VERSION:
        raise ModelLoadError(
            f"{path}: manifest schema_version {version!r} is not one this runtime reads (1…{MANIFEST_SCHEMA_VERSION}); "
            "upgrade edgeport on this device or re-export the bundle with the edgeport version installed here"
        )
    return data


def write_json(path: Path, data: Any) -> None:
    """Sorted, indented UTF-8 JSON, written atomically (a manifest or a report is never half written)."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def file_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the bundle (the manifest itself excluded)."""
    return {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
