"""Find the model file inside a bundle and check it against ``manifest.json`` before serving."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IntegrityError, ModelLoadError
from .manifest import MANIFEST_NAME, read_manifest, sha256_file

__all__ = ["FILE_BACKENDS", "ResolvedModel", "resolve_model"]

#: Model files the runtime opens on their own (no bundle): suffix → backend.
FILE_BACKENDS = {".onnx": "onnxruntime", ".xml": "openvino"}


@dataclass(frozen=True)
class ResolvedModel:
    """The model file to load, its backend, and the manifest that vouches for it (None for a bare file)."""

    path: Path
    format: str | None
    backend: str
    manifest: dict[str, Any] | None


def _verify(bundle_dir: Path, manifest: dict[str, Any], name: str) -> None:
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise IntegrityError(f"{bundle_dir / MANIFEST_NAME} has no sha256 for {name}; re-run edge-export")
    if not (bundle_dir / name).is_file():
        raise ModelLoadError(f"bundle {bundle_dir} lists {name} but the file is missing; re-run edge-export")
    actual = sha256_file(bundle_dir / name)
    if actual != entry["sha256"]:
        raise IntegrityError(
            f"{bundle_dir / name} does not match its sha256 in {MANIFEST_NAME} "
            f"(expected {entry['sha256'][:12]}…, found {actual[:12]}…): the file was modified or "
            "corrupted after export; restore it from your release or re-run edge-export"
        )


def _format_files(entry: dict[str, Any]) -> list[str]:
    """Every file a format needs (an OpenVINO IR is an .xml and a .bin)."""
    return list(entry.get("files") or [entry["file"]])


def _resolve_file(path: Path, backend: str, verify: bool) -> ResolvedModel:
    if path.suffix not in FILE_BACKENDS:
        raise ModelLoadError(
            f"{path} is not a model file the runtime opens ({', '.join(FILE_BACKENDS)}); "
            "pass an edge-export bundle directory or one of those files"
        )
    file_backend = FILE_BACKENDS[path.suffix]
    if backend not in ("auto", file_backend):
        raise ModelLoadError(f"{path} is a {path.suffix} file, which runs on {file_backend}, not {backend}")
    manifest = None
    # A file that sits in a bundle is still checked against that bundle's manifest.
    if (path.parent / MANIFEST_NAME).is_file() or (path.parent.parent / MANIFEST_NAME).is_file():
        root = path.parent if (path.parent / MANIFEST_NAME).is_file() else path.parent.parent
        manifest = read_manifest(root)
        rel = path.relative_to(root).as_posix()
        for entry in manifest["formats"].values():
            if isinstance(entry, dict) and entry.get("file") == rel and verify:
                for name in _format_files(entry):
                    _verify(root, manifest, name)
    return ResolvedModel(path, None, file_backend, manifest)


def resolve_model(
    path: str | os.PathLike, format: str | None = None, backend: str = "auto", verify: bool = True,
    verify_key: str | os.PathLike | None = None,
) -> ResolvedModel:
    """A bundle directory (sha256 of the chosen format's files verified) or a single model file.

    In a bundle, ``format`` picks a format by name; otherwise the first format (in the manifest's
    order) that runs on ``backend``; with neither, the first format, FP32 ONNX. With ``verify_key``
    the bundle must carry a valid signature by that key first (``signing.require_signed``).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; pass an edge-export bundle directory or a model file")
    check = None
    if verify_key is not None:
        from .signing import require_signed

        check = require_signed(path, verify_key)
        path = check.bundle if path.is_dir() else path  # load the folder that was verified, not a link switched since
    if path.is_file():
        return _resolve_file(path, backend, verify)
    manifest = read_manifest(path)
    formats: dict[str, Any] = manifest["formats"]
    if format is None:
        matching = [n for n, e in formats.items() if backend == "auto" or e.get("backend", "onnxruntime") == backend]
        if not matching:
            raise ModelLoadError(f"bundle {path} has no format for backend {backend!r}; it has {sorted(formats)}")
        format = matching[0]
    if format not in formats:
        raise ModelLoadError(f"bundle {path} has no format {format!r}; it has {sorted(formats)}")
    entry = formats[format]
    entry_backend = entry.get("backend", "onnxruntime")
    if backend not in ("auto", entry_backend):
        raise ModelLoadError(f"format {format!r} runs on {entry_backend}, not {backend}")
    if check is not None:  # the manifest read here is the one that was signed, for the files about to be loaded
        check.vouch_for(manifest, _format_files(entry))
    if verify:
        for name in _format_files(entry):
            _verify(path, manifest, name)
    return ResolvedModel(path / entry["file"], format, entry_backend, manifest)
