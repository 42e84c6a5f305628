"""torchvision transforms derived from the contract (never typed in twice)."""

from __future__ import annotations

from edgeport.runtime.contract import PreprocessContract
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = ["eval_transform"]


def eval_transform(contract: PreprocessContract) -> T.Compose:
    """The deterministic transform whose output the runtime's numpy path reproduces."""
    interp = InterpolationMode(contract.interpolation)
    if contract.center_crop:
        geometry = [T.Resize(contract.resize_size, interpolation=interp, antialias=True), T.CenterCrop(contract.input_size)]
    else:
        geometry = [T.Resize(contract.input_size, interpolation=interp, antialias=True)]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(contract.mean, contract.std)])
