"""The preprocessing contract: the single source of truth for how pixels reach the model.

The trainer builds its eval transform from it, export embeds it in every model file, and the
runtime reads it back from the model alone — so nobody re-types a mean/std by hand (the root
cause of the train/deploy mismatches filed against every peer tool).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .confidence import OOD_SCORES
from .errors import ContractError

__all__ = ["PreprocessContract", "OodRule", "METADATA_KEY", "SCHEMA_VERSION", "IMAGENET_MEAN", "IMAGENET_STD"]

#: Key under which the contract is stored as JSON in ONNX ``metadata_props`` (and OpenVINO rt_info).
METADATA_KEY = "edgeport.contract"
SCHEMA_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: Largest input or resize side a contract may ask for: 4× a 1024-pixel input, far past any classifier's.
MAX_SIDE = 4096
#: std below this divides noise into the 1e4 range; a 0..255 model input is std 1/255 ≈ 0.0039, still allowed.
MIN_STD = 1e-3


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: The temperature a contract may carry: outside this range a fit went wrong (logits scaled to noise or to one-hots).
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class OodRule:
    """How the model says "unknown": an out-of-distribution score (``confidence.OOD_SCORES``, higher = more like the
    training data) and the threshold below which a frame is called unknown (fitted on the validation split)."""

    score: str
    threshold: float

    def __post_init__(self) -> None:
        if self.score not in OOD_SCORES:
            raise ContractError(f"ood.score must be one of {', '.join(OOD_SCORES)}, got {self.score!r:.40}; "
                                "upgrade edgeport or re-export the model")
        if not _is_number(self.threshold):
            raise ContractError(f"ood.threshold must be a finite number, got {self.threshold!r:.40}; re-export the model")


@dataclass(frozen=True)
class PreprocessContract:
    """How a raw RGB image becomes the model's input tensor, plus the labels of its outputs.

    The pipeline is torchvision's classic eval transform: resize the *shorter* side to
    ``resize_size`` (antialiased, ``interpolation``), centre-crop ``input_size``, scale to [0, 1],
    subtract ``mean`` and divide by ``std`` per channel, lay out as ``NCHW`` ``float32``.
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int] = (224, 224)  # (height, width) of the model input
    resize_size: int = 256  # shorter side after resizing, before the centre crop
    interpolation: str = "bilinear"
    center_crop: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    schema_version: int = field(default=SCHEMA_VERSION)
    #: Logits are divided by this before the softmax (fitted on the validation split at the end of training);
    #: None: the plain softmax (models exported before calibration, ImageNet models).
    temperature: float | None = None
    #: When the model calls a frame unknown; None: never (as before).
    ood: OodRule | None = None

    def __post_init__(self) -> None:
        # Normalise sequences to tuples so JSON lists and tuples compare equal.
        for name in ("labels", "input_size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
            else:
                raise ContractError(f"contract field {name!r} must be a list, got {type(value).__name__}")
        if self.schema_version != SCHEMA_VERSION:
            raise ContractError(
                f"contract schema_version {self.schema_version} is not supported by this edgeport "
                f"(it reads version {SCHEMA_VERSION}); re-export the model with this edgeport version"
            )
        if len(self.labels) < 2 or not all(isinstance(x, str) and x for x in self.labels):
            raise ContractError("contract needs at least 2 non-empty string labels")
        # Labels need not be unique: ImageNet itself has two "crane" and two "maillot" classes.
        if len(self.input_size) != 2 or not all(_is_int(x) and 0 < x <= MAX_SIDE for x in self.input_size):
            raise ContractError(f"input_size must be two ints in 1..{MAX_SIDE} (height, width), got {self.input_size}")
        if not _is_int(self.resize_size) or not min(self.input_size) <= self.resize_size <= MAX_SIDE:
            raise ContractError(
                f"resize_size {self.resize_size!r:.40} must be an int from the crop {self.input_size} up to {MAX_SIDE}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ContractError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(_is_number(x) for x in value):
                raise ContractError(f"{name} must be 3 finite numbers (R, G, B), got {value}")
        if not all(0.0 <= m <= 1.0 for m in self.mean):
            raise ContractError(f"mean must be in 0..1 (pixels are scaled to 0..1 first), got {self.mean}")
        if not all(MIN_STD <= s <= 1e3 for s in self.std):
            raise ContractError(f"std must be positive, in {MIN_STD:g}..1000, got {self.std}")
        if self.temperature is not None and not (_is_number(self.temperature)
                                                 and TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1]):
            raise ContractError(f"temperature must be a number in {TEMPERATURE_RANGE[0]}..{TEMPERATURE_RANGE[1]}, "
                                f"got {self.temperature!r:.40}; re-export the model")
        if isinstance(self.ood, Mapping):
            try:
                object.__setattr__(self, "ood", OodRule(**self.ood))
            except TypeError as exc:
                raise ContractError(f"contract field 'ood' must be {{score, threshold}}: {exc}") from exc
        elif self.ood is not None and not isinstance(self.ood, OodRule):
            raise ContractError(f"contract field 'ood' must be an object or null, got {type(self.ood).__name__}")
        if not isinstance(self.center_crop, bool):
            raise ContractError(f"center_crop must be true or false, got {self.center_crop!r}")
        # Only what the runtime implements is accepted; anything else would be silently wrong.
        for name, allowed in (("channel_order", "RGB"), ("layout", "NCHW"), ("dtype", "float32")):
            if getattr(self, name) != allowed:
                raise ContractError(f"{name} {getattr(self, name)!r} is not supported (only {allowed!r})")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (lists, not tuples), e.g. for a weights_only checkpoint."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        data = asdict(self)
        for name in ("temperature", "ood"):  # absent rather than null: a contract without them reads as before
            if data[name] is None:
                del data[name]
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessContract":
        if not isinstance(data, Mapping):
            raise ContractError(f"contract must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ContractError(
                f"contract has unknown fields {sorted(unknown)}; it was written by a newer edgeport — "
                "upgrade edgeport or re-export the model"
            )
        if "labels" not in data:
            raise ContractError("contract has no 'labels'; re-export the model with edge-export")
        try:
            return cls(**data)
        except TypeError as exc:  # wrong field types
            raise ContractError(f"malformed contract: {exc}") from exc

    @classmethod
    def from_json(cls, text: str, source: str = "contract") -> "PreprocessContract":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{source}: contract is not valid JSON ({exc}); re-export the model") from exc
        return cls.from_dict(data)
