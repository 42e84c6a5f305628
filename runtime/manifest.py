"""The bundle's ``manifest.json``: its one reader and one writer (export writes through it, the runtime
and edge-bench read through it), the schema version both sides agree on, and the file hashes.

The reader treats the manifest as hostile input: a device serves only what the manifest vouches for, so
a manifest must not be able to point outside its bundle, make the reader allocate without bound, or
crash it with a traceback. Every problem is a ``ManifestError`` (exit 2) that names the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from .atomic import atomic_write_bytes
from .errors import ManifestError, ModelLoadError

__all__ = ["MANIFEST_NAME", "LABELS_NAME", "OOD_STATS_NAME", "MANIFEST_SCHEMA_VERSION", "MAX_MANIFEST_BYTES", "sha256_file", "read_manifest",
           "write_json", "file_entries", "member_path", "check_member_name", "is_bundle_manifest",
           "bundle_root", "bundle_root_of"]

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
#: The whitening matrix and class centres of a Mahalanobis "unknown" score (``confidence.MahalanobisStats``, one
#: float32 .npy), shared by every format of the bundle; hashed and signed like the model files.
OOD_STATS_NAME = "ood_stats.npy"
#: Bumped whenever a manifest field changes meaning or disappears; the reader refuses newer ones.
MANIFEST_SCHEMA_VERSION = 1
#: A real manifest is tens of KB (the ImageNet MobileNetV2 bundle of `edge-export torchvision:mobilenet_v2`: 23 KB,
#: its 1000 labels included); anything past this is refused unread.
MAX_MANIFEST_BYTES = 1 << 20
#: JSON nesting deeper than this is refused (that same manifest nests 4 levels deep).
MAX_MANIFEST_DEPTH = 32
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_member_name(name: object, field: str, where: Path) -> str:
    """``name`` as a bundle member: a relative POSIX path with no ``..``, no absolute start, no backslash."""
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: {field} must be a non-empty string path, got {type(name).__name__}; re-run edge-export")
    parts = PurePosixPath(name).parts
    if (name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts or "." in name.split("/")
            or re.match(r"[A-Za-z]:", name) or not parts):
        raise ManifestError(f"{where}: {field} {name!r} is not a plain relative path inside the bundle "
                            "(no '..', no absolute path); the manifest was tampered with — re-run edge-export")
    return name


def member_path(bundle_dir: Path, name: str) -> Path:
    """The real path of bundle member ``name``; refused when it (or a symlink on the way) leaves the bundle."""
    root = Path(bundle_dir).resolve()
    real = (root / name).resolve()
    if real != root and root not in real.parents:
        raise ManifestError(f"{bundle_dir}: {name} resolves outside the bundle (a symlink escapes it); "
                            "a bundle must hold its own files — re-run edge-export")
    return real


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a hostile manifest must not exhaust the stack here either)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_MANIFEST_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _unique(path: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: with a key twice, one reader could check the first value and another use
    the last (a zero sha256 first, the real one last)."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ManifestError(f"{path} has the key {twice[0]!r:.80} twice; the manifest was tampered with — re-run edge-export")
    return dict(pairs)


def _load_json(path: Path, bundle_dir: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{bundle_dir} has no {MANIFEST_NAME}; pass a bundle written by edge-export or an .onnx file") from exc
    except OSError as exc:
        raise ManifestError(f"{path} is unreadable ({exc}); re-run edge-export") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes, far more than any manifest edge-export "
                            "writes; refused unread — re-run edge-export")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path} is not UTF-8 text (byte {exc.start}); re-run edge-export") from exc
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _unique(path, pairs))
    except RecursionError as exc:
        raise ManifestError(f"{path} nests deeper than {MAX_MANIFEST_DEPTH} levels; re-run edge-export") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run edge-export") from exc
    if _depth(data) > MAX_MANIFEST_DEPTH:
        raise ManifestError(f"{path} nests deeper than {MAX_MANIFEST_DEPTH} levels; re-run edge-export")
    return data


def _check_files(path: Path, files: Any) -> None:
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{path}: 'files' must be a non-empty object of file → {{sha256, bytes}}; re-run edge-export")
    for name, entry in files.items():
        check_member_name(name, f"files[{name!r}]", path)
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: files[{name!r}] must be an object with 'sha256', got {type(entry).__name__}")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ManifestError(f"{path}: files[{name!r}].sha256 must be 64 lowercase hex digits, got {digest!r:.80}")
        size = entry.get("bytes")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ManifestError(f"{path}: files[{name!r}].bytes must be a non-negative integer, got {size!r:.80}")


def _check_formats(path: Path, formats: Any, files: dict[str, Any]) -> None:
    if not isinstance(formats, dict) or not formats:
        raise ManifestError(f"{path}: 'formats' must be a non-empty object of format name → entry; re-run edge-export")
    for name, entry in formats.items():
        field = f"formats[{name!r}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: {field} must be an object, got {type(entry).__name__}")
        if "file" not in entry:
            raise ManifestError(f"{path}: {field} has no 'file'; re-run edge-export")
        main = check_member_name(entry["file"], f"{field}.file", path)
        listed = entry.get("files", [main])
        if not isinstance(listed, list) or main not in listed:
            raise ManifestError(f"{path}: {field}.files must be a list that includes its file {main!r}")
        for member in listed:
            check_member_name(member, f"{field}.files", path)
            if member not in files:  # the file loaded must be one that is hashed
                raise ManifestError(f"{path}: {field} uses {member!r}, which has no sha256 in 'files'; the manifest "
                                    "was tampered with — re-run edge-export")
        backend = entry.get("backend", "onnxruntime")
        if not isinstance(backend, str):
            raise ManifestError(f"{path}: {field}.backend must be a string, got {type(backend).__name__}")


def is_bundle_manifest(folder: Path) -> bool:
    """Whether ``folder/manifest.json`` is meant as an edgeport bundle manifest (it has ``files`` or ``formats``),
    as opposed to another tool's file of that name. One that cannot even be read counts as meant: refuse, not skip."""
    try:
        data = _load_json(Path(folder) / MANIFEST_NAME, Path(folder))
    except ModelLoadError:
        return True
    return isinstance(data, dict) and ("files" in data or "formats" in data)


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The manifest of ``bundle_dir``, with its size, encoding, nesting, schema version, hashes and every
    member path checked (see the module docstring)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    data = _load_json(path, Path(bundle_dir))
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object, got {type(data).__name__}; re-run edge-export")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MANIFEST_SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: manifest schema_version {version!r:.40} is not one this runtime reads (1…{MANIFEST_SCHEMA_VERSION}); "
            "upgrade edgeport on this device or re-export the bundle with the edgeport version installed here"
        )
    _check_files(path, data.get("files"))
    _check_formats(path, data.get("formats"), data["files"])
    for name in data["files"]:  # every member stays inside the bundle, the files a format does not load too
        member_path(Path(bundle_dir), name)
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


def bundle_root(real: Path) -> tuple[Path, dict[str, Any]] | None:
    """The bundle a model file sits in and its manifest: the file's own folder, or the one above when
    that bundle has files in the file's folder (``openvino/model.xml``)."""
    if (real.parent / MANIFEST_NAME).is_file() and is_bundle_manifest(real.parent):
        return real.parent, read_manifest(real.parent)
    above = real.parent.parent
    if above != real.parent and (above / MANIFEST_NAME).is_file() and is_bundle_manifest(above):
        manifest = read_manifest(above)
        if any(name.startswith(f"{real.parent.name}/") for name in manifest["files"]):
            return above, manifest
    return None


def bundle_root_of(path: str | os.PathLike) -> Path | None:
    """The bundle directory holding model file ``path`` (symlinks resolved), or None for a bare file."""
    found = bundle_root(Path(path).resolve())
    return found[0] if found else None
