"""torchvision transforms derived from the contract (never typed in twice)."""

from __future__ import annotations

from edgeport.runtime.contract import PreprocessContract
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = ["eval_transform", "eval_geometry", "eval_to_input"]


def eval_geometry(contract: PreprocessContract) -> T.Compose:
    """The eval transform's PIL → PIL part (Resize, CenterCrop): what ``decode_cache`` keeps of an eval image."""
    interp = InterpolationMode(contract.interpolation)
    if contract.center_crop:
        return T.Compose([T.Resize(contract.resize_size, interpolation=interp, antialias=True),
                          T.CenterCrop(contract.input_size)])
    return T.Compose([T.Resize(contract.input_size, interpolation=interp, antialias=True)])


def eval_to_input(contract: PreprocessContract) -> T.Compose:
    """The rest of the eval transform: PIL → the normalized tensor the model takes."""
    return T.Compose([T.ToTensor(), T.Normalize(contract.mean, contract.std)])


def eval_transform(contract: PreprocessContract) -> T.Compose:
    """The deterministic transform whose output the runtime's numpy path reproduces."""
    return T.Compose([*eval_geometry(contract).transforms, *eval_to_input(contract).transforms])
