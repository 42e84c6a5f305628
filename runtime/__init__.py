"""edgeport's torch-free runtime: numpy + Pillow preprocessing and onnxruntime inference."""

from .privacy import apply_telemetry_policy

apply_telemetry_policy()  # first, before anything imports onnxruntime (see privacy.py)


from .classifier import Classifier, Prediction
from .contract import METADATA_KEY, PreprocessContract
from .errors import (
    ContractError,
    DataError,
    EdgeportError,
    FrameSourceError,
    ImageDecodeError,
    IntegrityError,
    ManifestError,
    ModelLoadError,
    VerificationError,
    WeightsNotFoundError,
)
from .frames import Frame
from .preprocess import load_image, preprocess
from .records import StreamResult

__all__ = [
    "Classifier",
    "Prediction",
    "StreamResult",
    "Frame",
    "PreprocessContract",
    "METADATA_KEY",
    "load_image",
    "preprocess",
    "EdgeportError",
    "ContractError",
    "DataError",
    "ImageDecodeError",
    "FrameSourceError",
    "IntegrityError",
    "ManifestError",
    "ModelLoadError",
    "VerificationError",
    "WeightsNotFoundError",
]
