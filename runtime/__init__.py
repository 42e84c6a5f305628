"""edgeport's torch-free runtime: numpy + Pillow preprocessing and onnxruntime inference."""

from .classifier import Classifier, Prediction
from .contract import METADATA_KEY, PreprocessContract
from .errors import (
    ContractError,
    DataError,
    EdgeportError,
    ImageDecodeError,
    IntegrityError,
    ModelLoadError,
    VerificationError,
    WeightsNotFoundError,
)
from .preprocess import load_image, preprocess

__all__ = [
    "Classifier",
    "Prediction",
    "PreprocessContract",
    "METADATA_KEY",
    "load_image",
    "preprocess",
    "EdgeportError",
    "ContractError",
    "DataError",
    "ImageDecodeError",
    "IntegrityError",
    "ModelLoadError",
    "VerificationError",
    "WeightsNotFoundError",
]
