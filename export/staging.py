"""Build a bundle in a temporary folder beside the target and rename it into place (atomic)."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgeport.runtime.atomic import public_mode
from edgeport.runtime.errors import ModelLoadError
from edgeport.runtime.manifest import MANIFEST_NAME

__all__ = ["staging_bundle"]


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
