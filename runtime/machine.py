"""The machine a figure was measured on: CPU model and ISA flags (INT8 kernels depend on VNNI / AVX-512 /
dot-product) and the installed versions of the libraries involved. Recorded in manifests and reports."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

__all__ = ["cpu_info", "library_versions"]

_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                      "amx_int8", "asimd", "asimddp", "sve")


def cpu_info() -> dict[str, object]:
    """Model name and the ISA flags relevant to inference, from /proc/cpuinfo where there is one."""
    info: dict[str, object] = {"machine": platform.machine(), "model": platform.processor() or "unknown", "flags": []}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags: set[str] = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and info["model"] in ("unknown", ""):
                info["model"] = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
        info["flags"] = [f for f in _FLAGS_OF_INTEREST if f in flags]
    return info


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{"python": …, name: version or "not installed"}`` — without importing any of them."""
    return {"python": platform.python_version(), **{name: _installed(name) for name in names}}
