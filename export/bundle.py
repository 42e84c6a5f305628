"""Build a bundle in a temporary folder beside the target and rename it into place (atomic)."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgeport.runtime.bundle import MANIFEST_NAME, sha256_file
from edgeport.runtime.errors import ModelLoadError
from edgeport.trainer.atomic import public_mode

__all__ = ["staging_bundle", "file_entries", "write_json"]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def file_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the bundle (the manifest itself excluded)."""
    return {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


@contextmanager
def staging_bundle(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``target``, on any error it vanishes.

    A killed process leaves at worst a hidden ``.NAME.staging-*`` folder, never a half bundle.
    """
    target = Path(target)
    if target.exists() and not (target / MANIFEST_NAME).is_file():
        if not target.is_dir() or any(target.iterdir()):
            raise ModelLoadError(f"--out {target} exists and is not an edgeport bundle; choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    staging.chmod(public_mode(0o777))  # mkdtemp makes 0700; the bundle is meant to be shipped
    try:
        yield staging
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(old / "bundle")
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
