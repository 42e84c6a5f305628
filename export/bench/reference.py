"""The PyTorch original of a model edge-bench measures: found from a checkpoint, ``torchvision:<name>``
or a bundle's manifest provenance. torch is imported here only, so the deployed formats can be
benchmarked on a device without it (the torch column is then skipped, with the reason recorded)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.manifest import sha256_file
from edgeport.trainer.loading import load_model, torchvision_spec

__all__ = ["TorchReference", "find_reference", "reference_spec"]


@dataclass
class TorchReference:
    """An eval-mode PyTorch model with batch logits, batch-1 runner and its own decode→top-k path."""

    spec: str
    model: Any  # torch.nn.Module
    transform: Callable[[Any], Any]  # the trainer's torchvision eval transform (the original preprocessing)
    file: Path | None  # the checkpoint, when there is one (its size is the torch row's size)
    contract: PreprocessContract

    def logits(self, tensors: np.ndarray, batch: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            outs = [self.model(torch.from_numpy(tensors[i : i + batch])).numpy() for i in range(0, len(tensors), batch)]
        return np.concatenate(outs)

    def tta_logits(self, tensors: np.ndarray, batch: int) -> np.ndarray:
        """The trainer's test-time augmentation (mean softmax of the crop and its mirror, as log-probabilities)."""
        import torch
        from edgeport.trainer.loading import tta_logits

        with torch.inference_mode():
            outs = [tta_logits(self.model, torch.from_numpy(tensors[i : i + batch])).numpy()
                    for i in range(0, len(tensors), batch)]
        return np.concatenate(outs)

    def runner(self, tensor: np.ndarray) -> Callable[[], object]:
        import torch

        x = torch.from_numpy(tensor)

        def run() -> object:
            with torch.inference_mode():
                return self.model(x)

        return run

    def preprocess_seconds(self, path: Path) -> tuple[Any, float]:
        """The torchvision eval transform of one file (decode included) and the seconds it took."""
        from PIL import Image

        start = time.perf_counter()
        with Image.open(path) as img:
            tensor = self.transform(img.convert("RGB"))
        return tensor, time.perf_counter() - start

    def end_to_end_seconds(self, path: Path, top_k: int) -> float:
        import torch

        tensor, prep = self.preprocess_seconds(path)
        start = time.perf_counter()
        with torch.inference_mode():
            probs = torch.softmax(self.model(tensor.unsqueeze(0)), dim=1)
            torch.topk(probs, min(top_k, probs.shape[1]))  # a 2-class model has no top-5
        return prep + time.perf_counter() - start


def reference_spec(manifest: dict[str, Any]) -> tuple[str | None, str]:
    """The source a bundle was exported from, as ``trainer.loading.load_model`` takes it, or None and why not."""
    source = manifest.get("source") or {}
    if source.get("kind") == "torchvision":
        return torchvision_spec(source["arch"]), "torchvision weights named in the manifest"
    if source.get("kind") == "checkpoint":
        path = source.get("checkpoint")
        if not path:
            return None, "the manifest names no checkpoint path (bundle exported before edge-bench); pass the checkpoint as MODEL"
        if not Path(path).is_file():
            return None, f"the checkpoint {path} named in the manifest is not on this machine; pass it as MODEL"
        if sha256_file(path) != source.get("checkpoint_sha256"):
            return None, f"the checkpoint {path} changed since the export (sha256 differs); re-export or pass it as MODEL"
        return path, "checkpoint named in the manifest"
    return None, "the manifest does not say where the model came from"


def find_reference(spec: str | None, threads: int | None) -> tuple[TorchReference | None, str]:
    """Load the PyTorch original, or None and the reason (no torch here, no source known)."""
    if spec is None:
        return None, "no PyTorch source known"
    try:
        import torch
    except ImportError:
        return None, "torch is not installed on this machine (install edgeport[train] for the torch column)"
    if threads:
        torch.set_num_threads(threads)
    src = load_model(spec)
    return TorchReference(spec, src.model, src.eval_transform(), src.checkpoint, src.contract), "measured"
