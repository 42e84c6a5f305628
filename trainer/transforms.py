"""torchvision transforms derived from the contract (never typed in twice)."""

from __future__ import annotations

from edgeport.runtime.contract import PreprocessContract
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = ["eval_transform", "train_transform"]


def eval_transform(contract: PreprocessContract) -> T.Compose:
    """The deterministic transform whose output the runtime's numpy path reproduces."""
    interp = InterpolationMode(contract.interpolation)
    if contract.center_crop:
        geometry = [T.Resize(contract.resize_size, interpolation=interp, antialias=True), T.CenterCrop(contract.input_size)]
    else:
        geometry = [T.Resize(contract.input_size, interpolation=interp, antialias=True)]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(contract.mean, contract.std)])


def train_transform(contract: PreprocessContract) -> T.Compose:
    """Light augmentation: random crops of at least a third of the image, and flips."""
    interp = InterpolationMode(contract.interpolation)
    return T.Compose(
        [
            T.RandomResizedCrop(contract.input_size, scale=(0.35, 1.0), interpolation=interp, antialias=True),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(contract.mean, contract.std),
        ]
    )
