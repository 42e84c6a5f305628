"""Device decisions as pure functions: which device, AMP, channels_last, loader workers, threads.

Kept apart from the loop so the CUDA choices can be unit-tested on a machine without a GPU.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from edgeport.runtime.errors import UsageError

__all__ = ["resolve_device", "use_amp", "amp_dtype", "use_grad_scaler", "use_channels_last", "default_workers",
           "seed_everything"]


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


def use_amp(device: torch.device) -> bool:
    """Autocast on CUDA only: CPU float16/bfloat16 kernels are slower on AVX2 boxes."""
    return device.type == "cuda"


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it (Ampere and later: no loss scaling needed), else float16."""
    if use_amp(device) and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def use_grad_scaler(device: torch.device) -> bool:
    """float16's narrow exponent needs loss scaling; bfloat16 (and float32 on CPU) does not."""
    return use_amp(device) and amp_dtype(device) == torch.float16


def use_channels_last(device: torch.device) -> bool:
    """channels_last feeds cuDNN's fastest convolution kernels under AMP; on CPU it buys nothing here."""
    return device.type == "cuda"


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
