"""Data-parallel training through PyTorch's own engine: torchrun starts the processes, DDP syncs them.

torchrun (``torch.distributed.run``) does the launch and the rendezvous and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; this module only reads them, opens the
process group (gloo on CPU, nccl on CUDA) with a timeout, and wraps the few collectives the loop
needs. Without torchrun's variables everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, TypeVar

import torch
import torch.distributed as dist
from edgeport.runtime.errors import UsageError, WorkerFailedError

from .devices import resolve_device

__all__ = ["DEFAULT_TIMEOUT_S", "Dist", "init_distributed", "shard_indices", "merge_shards", "is_collective_failure"]

#: Where a backend's error comes from, in its message: DDP's own gradient all-reduce raises a plain RuntimeError.
#: gloo's TCP transport words its errors without its own name: "Timed out waiting" for the operation that timed
#: out, "Application timeout caused pair closure" for one that meets the pair it closed (which comes first is a race).
_BACKEND_MARKERS = ("gloo", "NCCL", "ProcessGroup", "Timed out waiting", "Application timeout caused pair closure",
                    "Connection closed by peer", "Connection reset", "Socket closed", "Socket unexpectedly closed",
                    "Socket Timeout", "Pair is not connected")


def is_collective_failure(exc: BaseException) -> bool:
    """True for an error of the process group (a peer died or did not answer), not of the training code."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(m in str(exc) for m in _BACKEND_MARKERS))

#: How long a rank waits in a collective for the others before the job fails. It must cover the
#: longest stretch one rank works alone while the others wait: rank 0's folder scan and LR finder.
DEFAULT_TIMEOUT_S = 1800

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among ``world_size`` processes, its device and the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group
    device: torch.device = torch.device("cpu")
    timeout_s: float = DEFAULT_TIMEOUT_S
    owns_group: bool = False  # opened here (closed by ``close``), not by the caller's own script

    @contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """A failed collective (a peer died, or waited past the timeout) as an error that says so."""
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:
            raise self.failure(what, exc) from exc

    def failure(self, what: str, exc: BaseException) -> WorkerFailedError:
        """The error to raise for a backend failure during ``what``: it names the likely cause and the timeout."""
        return WorkerFailedError(f"rank {self.rank}: {what} across {self.world_size} processes failed ({exc}); another "
                                 f"process died or did not answer within --dist-timeout {self.timeout_s:g} s")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        with self._collective("broadcast"):
            dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        with self._collective("all_gather"):
            dist.all_gather_object(out, obj)
        return out

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64, so image counts stay exact)."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        with self._collective("all_reduce"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.active:
            with self._collective("barrier"):
                dist.barrier(device_ids=[self.device.index] if self.backend == "nccl" else None)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.isdigit():
        raise UsageError(f"torchrun variable {name}={value!r} is not a number; start the job with torchrun")
    return int(value)


def init_distributed(device_name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Dist:
    """Open the process group when started by torchrun (``WORLD_SIZE`` set), else one plain process.

    A collective that waits longer than ``timeout_s`` (a rank died or hung) raises instead of hanging;
    torchrun then stops the other ranks and exits non-zero.
    """
    if "WORLD_SIZE" not in os.environ:
        return Dist(device=resolve_device(device_name))
    rank, world_size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    device = resolve_device(device_name, local_rank=local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
        except (RuntimeError, dist.DistError) as exc:
            raise WorkerFailedError(f"rank {rank}: could not join the {world_size}-process group ({exc}); check that "
                                    "every node reaches --rdzv-endpoint and runs the same command") from exc
    else:
        backend = dist.get_backend()  # the caller's own process group
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend, device=device, timeout_s=timeout_s,
                owns_group=owns_group)


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, …`` of ``n`` items: every item on exactly one rank, no padding
    (unlike ``DistributedSampler``, which repeats items to even out the shards)."""
    return list(range(rank, n, world_size))


def merge_shards(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Undo ``shard_indices``: per-rank results (dicts of per-item tensors) → one dict in item order."""
    world_size = len(parts)
    if world_size == 1:
        return parts[0]
    merged = {}
    for key in parts[0]:
        n = sum(len(p[key]) for p in parts)
        out = torch.empty((n, *parts[0][key].shape[1:]), dtype=parts[0][key].dtype)
        for rank, part in enumerate(parts):
            out[rank::world_size] = part[key]
        merged[key] = out
    return merged
