"""Find the model file inside a bundle and check it against ``manifest.json`` before serving."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IntegrityError, ModelLoadError

__all__ = ["MANIFEST_NAME", "LABELS_NAME", "ResolvedModel", "resolve_model", "sha256_file", "read_manifest"]

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = bundle_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{bundle_dir} has no {MANIFEST_NAME}; pass a bundle written by edge-export or an .onnx file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is unreadable ({exc}); re-run edge-export") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not isinstance(data.get("formats"), dict):
        raise ModelLoadError(f"{path} lacks 'files'/'formats'; re-run edge-export")
    return data


@dataclass(frozen=True)
class ResolvedModel:
    """The model file to load, and the manifest that vouches for it (None for a bare file)."""

    path: Path
    format: str
    manifest: dict[str, Any] | None


def _verify(bundle_dir: Path, manifest: dict[str, Any], name: str) -> None:
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise IntegrityError(f"{bundle_dir / MANIFEST_NAME} has no sha256 for {name}; re-run edge-export")
    actual = sha256_file(bundle_dir / name)
    if actual != entry["sha256"]:
        raise IntegrityError(
            f"{bundle_dir / name} does not match its sha256 in {MANIFEST_NAME} "
            f"(expected {entry['sha256'][:12]}…, found {actual[:12]}…): the file was modified or "
            "corrupted after export; restore it from your release or re-run edge-export"
        )


def resolve_model(path: str | os.PathLike, format: str | None = None, verify: bool = True) -> ResolvedModel:
    """A bundle directory (manifest verified) or a single model file (contract from its metadata)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; pass an edge-export bundle directory or an .onnx file")
    if path.is_file():
        if path.suffix != ".onnx":
            raise ModelLoadError(f"{path} is not an .onnx file; pass an edge-export bundle directory or an .onnx file")
        manifest = None
        # A file that sits in a bundle is still checked against that bundle's manifest.
        if (path.parent / MANIFEST_NAME).is_file():
            manifest = read_manifest(path.parent)
            if verify and path.name in manifest["files"]:
                _verify(path.parent, manifest, path.name)
        return ResolvedModel(path, "onnx", manifest)
    manifest = read_manifest(path)
    formats: dict[str, Any] = manifest["formats"]
    if format is None:
        format = "onnx" if "onnx" in formats else next(iter(formats), None)
    if format not in formats:
        raise ModelLoadError(f"bundle {path} has no format {format!r}; it has {sorted(formats)}")
    name = formats[format]["file"]
    if not (path / name).is_file():
        raise ModelLoadError(f"bundle {path} lists {name} but the file is missing; re-run edge-export")
    if verify:
        _verify(path, manifest, name)
    return ResolvedModel(path / name, format, manifest)
