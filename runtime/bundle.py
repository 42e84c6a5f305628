"""Find the model file inside a bundle and check it against ``manifest.json`` before serving.

What is served is what was verified: each file of the chosen format is read once, its sha256 is checked
on those bytes, and the backend is handed the same bytes (``ResolvedModel.verified_bytes``) rather than
re-opening the file by name, so a file swapped after the check is never loaded. An ONNX model's
external-data files must be listed and hashed too.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import IntegrityError, ModelLoadError
from .manifest import MANIFEST_NAME, OOD_STATS_NAME, bundle_root, check_member_name, member_path, read_manifest
from .onnx_external import external_data_files
from .signing import require_signed

__all__ = ["FILE_BACKENDS", "ResolvedModel", "resolve_model"]

#: Model files the runtime opens on their own (no bundle): suffix → backend.
FILE_BACKENDS = {".onnx": "onnxruntime", ".xml": "openvino"}


@dataclass(frozen=True)
class ResolvedModel:
    """The model file to load, its backend, and the manifest that vouches for it (None for a bare file).

    ``verified_bytes``: for a verified bundle format, every file the backend needs, keyed by its path
    relative to the model file's folder (the model itself under its own name), holding the exact bytes
    whose sha256 matched the manifest. None for a bare file or with ``verify=False``.
    ``ood_stats``: the bundle's ``ood_stats.npy`` (verified like the model), None when it has none or for a bare file.
    """

    path: Path
    format: str | None
    backend: str
    manifest: dict[str, Any] | None
    verified_bytes: Mapping[str, bytes] | None = field(default=None, repr=False, compare=False)
    ood_stats: bytes | None = field(default=None, repr=False, compare=False)


def _read_member(bundle_dir: Path, name: str, expected_size: int | None) -> bytes:
    """The bytes of bundle member ``name``: inside the bundle, a regular file, read through one open file."""
    real = member_path(bundle_dir, name)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO planted in a bundle must not block the open
    except FileNotFoundError as exc:
        raise ModelLoadError(f"bundle {bundle_dir} lists {name} but the file is missing; re-run edge-export") from exc
    except OSError as exc:
        raise ModelLoadError(f"bundle {bundle_dir}: cannot open {name} ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ModelLoadError(f"bundle {bundle_dir}: {name} is not a regular file; re-run edge-export")
        if expected_size is not None and info.st_size != expected_size:
            raise IntegrityError(f"{bundle_dir / name} does not match its sha256 in {MANIFEST_NAME} (it has "
                                 f"{info.st_size} bytes, not the {expected_size} recorded, so it was not read): the file "
                                 "was modified or corrupted after export; restore it from your release or re-run edge-export")
        return fh.read()


def _verify(bundle_dir: Path, manifest: dict[str, Any], name: str) -> bytes:
    """The bytes of ``name``, after their sha256 matched the manifest (checked on those very bytes)."""
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise IntegrityError(f"{bundle_dir / MANIFEST_NAME} has no sha256 for {name}; re-run edge-export")
    data = _read_member(bundle_dir, name, entry.get("bytes"))
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        # The found hash is not printed: the message must not become an oracle for file contents.
        raise IntegrityError(
            f"{bundle_dir / name} does not match its sha256 in {MANIFEST_NAME} (expected {entry['sha256'][:12]}…): "
            "the file was modified or corrupted after export; restore it from your release or re-run edge-export"
        )
    return data


def _format_files(entry: dict[str, Any]) -> list[str]:
    """Every file a format needs (an OpenVINO IR is an .xml and a .bin)."""
    return list(entry.get("files") or [entry["file"]])


def _verified_format(bundle_dir: Path, manifest: dict[str, Any], entry: dict[str, Any], backend: str) -> dict[str, bytes]:
    """Every file of a format (and an ONNX model's external data), verified, keyed relative to the model's folder."""
    model_dir = posixpath.dirname(entry["file"])
    blobs = {posixpath.relpath(name, model_dir or "."): _verify(bundle_dir, manifest, name) for name in _format_files(entry)}
    if backend == "onnxruntime":
        model_key = posixpath.basename(entry["file"])
        for location in sorted(external_data_files(blobs[model_key], source=str(bundle_dir / entry["file"]))):
            if location in blobs:  # listed among the format's own files: verified above
                continue
            member = posixpath.normpath(posixpath.join(model_dir, location)) if model_dir else location
            check_member_name(member, f"external data {location!r} of {entry['file']}", bundle_dir / MANIFEST_NAME)
            if member not in manifest["files"]:
                raise IntegrityError(
                    f"{bundle_dir / entry['file']} references the external-data file {location!r}, which "
                    f"{MANIFEST_NAME} does not list with a sha256; the bundle was tampered with — re-run edge-export"
                )
            blobs[location] = _verify(bundle_dir, manifest, member)
    return blobs


def _bundle_extras(manifest: dict[str, Any]) -> list[str]:
    """The bundle-wide files every format uses besides its own (the "unknown" score's statistics)."""
    return [OOD_STATS_NAME] if OOD_STATS_NAME in manifest["files"] else []


def _ood_stats(bundle_dir: Path, manifest: dict[str, Any], verify: bool) -> bytes | None:
    if not _bundle_extras(manifest):
        return None
    if verify:
        return _verify(bundle_dir, manifest, OOD_STATS_NAME)
    return _read_member(bundle_dir, OOD_STATS_NAME, None)


def _resolve_file(path: Path, backend: str, verify: bool) -> ResolvedModel:
    if path.suffix not in FILE_BACKENDS:
        raise ModelLoadError(
            f"{path} is not a model file the runtime opens ({', '.join(FILE_BACKENDS)}); "
            "pass an edge-export bundle directory or one of those files"
        )
    file_backend = FILE_BACKENDS[path.suffix]
    if backend not in ("auto", file_backend):
        raise ModelLoadError(f"{path} is a {path.suffix} file, which runs on {file_backend}, not {backend}")
    # A file that sits in a bundle (also through a symlink) is served only as one of that bundle's formats.
    real = path.resolve()
    found = bundle_root(real)
    if found is None:
        return ResolvedModel(path, None, file_backend, None)
    root, manifest = found
    rel = real.relative_to(root).as_posix()
    for name, entry in manifest["formats"].items():
        if entry["file"] == rel:
            blobs = _verified_format(root, manifest, entry, file_backend) if verify else None
            return ResolvedModel(root / rel, name, file_backend, manifest, blobs, _ood_stats(root, manifest, verify))
    raise ModelLoadError(
        f"{path} sits in the bundle {root} but is not the file of any of its formats ({sorted(manifest['formats'])}); "
        "pass the bundle directory (with --model-format), or copy the model out of the bundle to run it unverified"
    )


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
        check = require_signed(path, verify_key)
        path = check.bundle if path.is_dir() else path  # load the folder that was verified, not a link switched since
    if path.is_file():
        return _resolve_file(path, backend, verify)
    # One real folder from here on: a symlink switched mid-load cannot mix two bundles, and the model's path names the
    # folder its bytes came from (a later switch of the link does not change what this model is).
    path = path.resolve()
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
        check.vouch_for(manifest, _format_files(entry) + _bundle_extras(manifest))
    blobs = _verified_format(path, manifest, entry, entry_backend) if verify else None
    # The path is only a name from here on; with verification the backend loads ``blobs``.
    return ResolvedModel(member_path(path, entry["file"]) if not verify else path / entry["file"], format, entry_backend,
                         manifest, blobs, _ood_stats(path, manifest, verify))
