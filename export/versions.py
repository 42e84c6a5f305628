"""Installed versions of the libraries a measurement depends on (recorded with every figure)."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["library_versions"]


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{"python": …, name: version or "not installed"}`` — without importing any of them."""
    return {"python": platform.python_version(), **{name: _installed(name) for name in names}}
