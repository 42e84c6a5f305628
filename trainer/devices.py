"""Device decisions as pure functions: which device, precision (autocast, channels_last), loader workers, seeds.

Kept apart from the loop so the CUDA choices can be unit-tested on a machine without a GPU.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from edgeport.runtime.errors import UsageError

from .choices import AMP_MODES

__all__ = ["resolve_device", "BF16_CPU_FLAGS", "cpu_flags", "Precision", "choose_precision", "default_workers", "seed_everything"]


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA when visible; asking for ``cuda`` without one is an error, never a silent CPU run.

    Under torchrun (``local_rank`` given) a CUDA run takes GPU ``local_rank``: one process per GPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and local_rank is not None:
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"process with LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                             "run at most one process per GPU (--nproc-per-node ≤ the GPU count)")
        return torch.device("cuda", local_rank)
    return torch.device(name)


#: CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix arithmetic.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (the ``flags`` line of /proc/cpuinfo); empty where the OS does not tell."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@dataclass(frozen=True)
class Precision:
    """How a run computes: the autocast dtype (None: float32), the memory format, loss scaling, and why (printed)."""

    autocast: torch.dtype | None
    channels_last: bool
    grad_scaler: bool
    why: str

    @property
    def amp(self) -> str | None:
        """The autocast dtype's name for metrics.json, or None."""
        return None if self.autocast is None else str(self.autocast).removeprefix("torch.")


def choose_precision(device: torch.device, amp: str = "auto", flags: frozenset[str] | None = None) -> Precision:
    """The run's precision from the device, ``--amp`` and (on a CPU) its feature flags.

    CUDA: autocast in bfloat16 where the GPU supports it (Ampere and later: no loss scaling), else float16 with a
    scaler. CPU: bfloat16 autocast only where the CPU has AVX512_BF16 or AMX (the issue's by-hand MobileNetV2 step
    at batch 16 on an AVX-512 BF16 EPYC: ×0.71 of float32); on AVX2 it is emulated, 8–18× slower here.
    channels_last everywhere: on CUDA it feeds cuDNN's fastest kernels, and on an AVX2 CPU a MobileNetV2 or Lite0
    training step ran at ×0.84 of the default layout, an eval pass at ×0.75–0.78 (docs/training.md, "Time on a CPU").
    """
    if amp not in AMP_MODES:
        raise UsageError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if device.type == "cuda":
        if amp == "off":
            return Precision(None, True, False, "float32 on the GPU (--amp off)")
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, True, False, "bfloat16 autocast on the GPU")
        return Precision(torch.float16, True, True, "float16 autocast with loss scaling (this GPU has no bfloat16)")
    native = bool(BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags))
    if amp == "on" or (amp == "auto" and native):
        why = ("bfloat16 autocast: the CPU has AVX512_BF16/AMX" if native else
               "bfloat16 autocast (--amp on) on a CPU without AVX512_BF16 or AMX: emulated, slower than float32")
        return Precision(torch.bfloat16, True, False, why)
    why = "float32 (--amp off)" if amp == "off" else \
        "float32: the CPU has no AVX512_BF16 or AMX, where bfloat16 would be emulated and slower"
    return Precision(None, True, False, why)


def default_workers(device: torch.device, cpus: int | None = None) -> int:
    """Loader processes: none on ≤2 CPUs (both cores are busy with the model), a few otherwise."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if device.type == "cpu":
        return 0 if cpus <= 2 else min(4, cpus // 2)
    return min(8, max(1, cpus - 1))  # the GPU waits on decoding: use every spare core


def seed_everything(seed: int) -> None:
    """Same seed, same split, same augmentation and same weights update order on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
