"""Checkpoints as plain data (``torch.load(weights_only=True)`` safe), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgeport.runtime.atomic import atomic_write_bytes
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import ModelLoadError

__all__ = ["CHECKPOINT_KIND", "save_checkpoint", "load_checkpoint", "save_run_state", "load_run_state"]

CHECKPOINT_KIND = "edgeport.checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: Path,
    *,
    arch: str,
    state_dict: dict[str, torch.Tensor],
    contract: PreprocessContract,
    epoch: int,
    metrics: dict[str, Any],
    val_files: list[str],
    head: str = "linear",
    ood_stats: np.ndarray | None = None,
) -> None:
    """``ood_stats``: the Mahalanobis "unknown" score's statistics (``MahalanobisStats.to_array``), when fitted."""
    payload = {
        "kind": CHECKPOINT_KIND,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "head": head,  # choices.HEADS; a checkpoint without it has the architecture's own Linear head
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "contract": contract.to_dict(),
        "epoch": epoch,
        "metrics": metrics,
        "val_files": val_files,
    }
    if ood_stats is not None:
        payload["ood_stats"] = torch.from_numpy(np.ascontiguousarray(ood_stats, np.float32))
    atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist; pass RUN_DIR/best.pt written by edge-train")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a loadable edgeport checkpoint ({exc}); re-run edge-train") from exc
    if not isinstance(data, dict) or data.get("kind") != CHECKPOINT_KIND:
        raise ModelLoadError(f"{path} is not an edgeport checkpoint (written by edge-train); got another file")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ModelLoadError(f"{path} has checkpoint version {data.get('version')}; this edgeport reads {CHECKPOINT_VERSION}")
    data["contract"] = PreprocessContract.from_dict(data["contract"])
    return data


RUN_STATE_KIND = "edgeport.run_state"


def save_run_state(path: Path, state: dict[str, Any]) -> None:
    """``last.pt``: everything ``--resume`` needs (model, optimizer, scheduler, RNG, history) as plain data."""
    atomic_write_bytes(path, lambda fh: torch.save({"kind": RUN_STATE_KIND, "version": CHECKPOINT_VERSION, **state}, fh))


def load_run_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The last completed epoch of a run folder, or a ModelLoadError that says what to do."""
    path = Path(run_dir) / "last.pt"
    if not path.is_file():
        raise ModelLoadError(f"--resume {run_dir}: no last.pt there; pass the --out folder of an edge-train run "
                             "that finished at least one epoch")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not loadable ({exc}); start a new run without --resume") from exc
    if not isinstance(data, dict) or data.get("kind") != RUN_STATE_KIND or data.get("version") != CHECKPOINT_VERSION:
        raise ModelLoadError(f"{path} is not an edgeport run state of version {CHECKPOINT_VERSION}; start a new run")
    return data
