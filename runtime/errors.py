"""One small error hierarchy for every stage.

Every message says what went wrong *and* what to do about it; the CLIs turn these into click
errors and exit codes. Lives in the runtime because the runtime must raise them without torch.
"""

from __future__ import annotations

__all__ = [
    "EdgeportError",
    "ContractError",
    "ImageDecodeError",
    "FrameSourceError",
    "ModelLoadError",
    "IntegrityError",
    "DataError",
    "WeightsNotFoundError",
    "VerificationError",
    "GateError",
    "AccuracyGateError",
    "SpeedGateError",
    "LayerNameError",
]


class EdgeportError(Exception):
    """Base class of every error edgeport raises on purpose."""


class ContractError(EdgeportError):
    """The preprocessing contract is missing, malformed or inconsistent with the model."""


class ImageDecodeError(EdgeportError):
    """A file (or frame) could not be decoded into an RGB image."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class FrameSourceError(EdgeportError):
    """A video, camera or watched folder cannot be opened (the stream cannot start at all)."""


class ModelLoadError(EdgeportError):
    """A model file or bundle could not be found or opened."""


class IntegrityError(ModelLoadError):
    """A bundle file no longer matches the sha256 recorded in its manifest."""


class DataError(EdgeportError):
    """A training/evaluation image folder is unusable (no classes, empty class folder, ...)."""


class WeightsNotFoundError(EdgeportError):
    """Pretrained weights could not be found offline nor downloaded."""


class VerificationError(EdgeportError):
    """An exported model does not reproduce the PyTorch model on real images."""


class GateError(EdgeportError):
    """A release gate failed; the export report says which format missed which budget."""


class AccuracyGateError(GateError):
    """A deployed format is further below PyTorch than ``--max-drop`` allows."""


class SpeedGateError(GateError):
    """An INT8 format is not faster than FP32 while ``--require-speedup`` is set."""


class LayerNameError(EdgeportError):
    """A layer asked for by name (explain tools) is not in the model; the message lists valid names."""
