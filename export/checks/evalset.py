"""The images a model is measured on, preprocessed once by the runtime (torch-free, so edge-bench
can measure deployed formats on a device without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import DataError
from edgeport.runtime.inputs import iter_image_files
from edgeport.runtime.preprocess import preprocess_files

__all__ = ["EvalSet", "load_eval_set"]


@dataclass(frozen=True)
class EvalSet:
    paths: list[Path]
    tensors: np.ndarray  # (N, 3, H, W), the runtime's preprocessing
    targets: np.ndarray | None  # label indices, or None when the folder has no class sub-folders
    skipped: list[str]


def load_eval_set(folder: Path, contract: PreprocessContract, option: str = "--eval") -> EvalSet:
    """Images under ``folder``; labelled when its sub-folders are named like the model's labels.
    ``option`` names the command-line option in error messages."""
    folder = Path(folder)
    files = iter_image_files(folder)
    if not files:
        raise DataError(f"{option} {folder} holds no images; point it at a folder of JPEG/PNG files (class sub-folders give top-1)")
    subdirs = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    index = {label: i for i, label in enumerate(contract.labels)}
    labelled = bool(subdirs) and all(d in index for d in subdirs)
    if subdirs and not labelled and any(d in index for d in subdirs):
        unknown = [d for d in subdirs if d not in index]
        raise DataError(f"{option} {folder} has class folders {unknown} that are not labels of the model; rename or remove them")
    tensors, kept, skipped = preprocess_files(files, contract)
    if not kept:
        raise DataError(f"{option} {folder}: no image could be decoded")
    targets = np.asarray([index[p.relative_to(folder).parts[0]] for p in kept]) if labelled else None
    return EvalSet(kept, tensors, targets, skipped)
