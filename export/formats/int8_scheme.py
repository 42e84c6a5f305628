"""Which INT8 types a CPU runs well: the one place that picks U8S8 and 7- or 8-bit weights per target CPU.

Without VNNI (AVX2 and plain AVX-512 CPUs) onnxruntime's U8S8 GEMM kernels multiply-accumulate in 16
bits and can saturate; the onnxruntime docs advise ``reduce_range`` (7-bit weights) there. With VNNI,
and on ARM with dot-product instructions, U8S8 is both exact and fastest (see ``onnx_int8``). On ARM
kernels (onnxruntime aarch64 in the emulated root of ``make arm64-check --study``) 8-bit U8S8 and S8S8
weights both agreed with FP32 on every photo and 7-bit GEMM weights lost one: arm64 keeps 8-bit U8S8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeport.runtime.errors import UsageError
from edgeport.runtime.machine import cpu_info

__all__ = ["Int8Scheme", "TARGET_CPUS", "INT8_ENGINES", "INT8_METHODS", "CALIB_METHODS", "choose_scheme"]

TARGET_CPUS = ("host", "avx2", "avx512", "vnni", "arm64")
INT8_ENGINES = ("onnxruntime", "nncf")
CALIB_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime engine only
#: How the onnxruntime engine rounds INT8 weights: to nearest (ptq), or learned layer by layer (adaround, see
#: ``reconstruction``). The manifest's ``int8_method`` of each INT8 format names what made it.
INT8_METHODS = ("ptq", "adaround")


@dataclass(frozen=True)
class Int8Scheme:
    target_cpu: str
    activation_type: str
    weight_type: str
    reduce_range: bool  # 7-bit weights (NNCF: overflow_fix)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host_target(cpu: dict[str, Any]) -> str:
    flags = set(cpu.get("flags", []))
    if str(cpu.get("machine", "")).lower() in ("aarch64", "arm64"):
        return "arm64"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def choose_scheme(target_cpu: str = "host", cpu: dict[str, Any] | None = None) -> Int8Scheme:
    """The QDQ types for ``target_cpu`` (``host`` = the CPU running the export)."""
    if target_cpu not in TARGET_CPUS:
        raise UsageError(f"--target-cpu must be one of {', '.join(TARGET_CPUS)}, got {target_cpu!r}")
    target = _host_target(cpu or cpu_info()) if target_cpu == "host" else target_cpu
    if target in ("vnni", "arm64"):
        return Int8Scheme(target, "uint8", "int8", False, f"{target}: U8S8 accumulates exactly in 32 bits")
    return Int8Scheme(
        target, "uint8", "int8", True,
        f"{target} without VNNI: U8S8 saturates the 16-bit accumulation of GEMM kernels, so their weights use 7 bits "
        "(reduce_range)",
    )
