"""What the CPU can do, as recorded in manifests (INT8 kernels depend on VNNI / AVX-512 / dot-product)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_info"]

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
