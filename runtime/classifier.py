"""The Python API devices use: ``Classifier(path).predict(image)``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .backends import create_backend
from .bundle import resolve_model
from .contract import PreprocessContract
from .preprocess import ImageInput, preprocess

__all__ = ["Classifier", "Prediction", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # stable for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """Top-k (label, probability) pairs, best first."""

    top: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def score(self) -> float:
        return self.top[0][1]


class Classifier:
    """An exported edgeport model: a bundle directory (sha256-verified) or a single model file
    (``.onnx`` for onnxruntime, ``.xml`` OpenVINO IR).

    Preprocessing and labels come from the contract inside the model; there is nothing to configure.
    ``format`` picks one of a bundle's formats by name (``onnx``, ``onnx-int8``, ``openvino`` …);
    ``backend`` (``auto``, ``onnxruntime``, ``openvino``) picks the first format that runs on it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "auto",
        threads: int | None = None,
        format: str | None = None,
        batch_size: int = 8,
    ):
        resolved = resolve_model(path, format=format, backend=backend)
        self.model_path = resolved.path
        self.format = resolved.format
        self.manifest = resolved.manifest
        self._backend = create_backend(resolved.backend, resolved.path, threads=threads)
        self.contract: PreprocessContract = self._backend.contract
        self.batch_size = batch_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def backend(self) -> str:
        return self._backend.name

    def preprocess(self, image: ImageInput, color: str | None = None) -> np.ndarray:
        return preprocess(image, self.contract, color)

    def logits_from_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Run already-preprocessed ``(N, 3, H, W)`` float32 input, in chunks of ``batch_size``."""
        outs = [self._backend.run(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.contract.num_classes), np.float32)

    def logits(self, images: Sequence[ImageInput], color: str | None = None) -> np.ndarray:
        if not images:
            return np.zeros((0, self.contract.num_classes), np.float32)
        return self.logits_from_tensor(np.stack([self.preprocess(im, color) for im in images]))

    def scores(self, images: Sequence[ImageInput], color: str | None = None) -> np.ndarray:
        """Class probabilities, shape ``(N, num_classes)``, columns in ``labels`` order."""
        return softmax(self.logits(images, color))

    def top_k(self, probabilities: np.ndarray, k: int = 5) -> list[Prediction]:
        k = max(1, min(k, self.contract.num_classes))
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
        return [
            Prediction(tuple((self.labels[i], float(p[i])) for i in idx)) for p, idx in zip(probabilities, order)
        ]

    def predict(self, image: ImageInput, top_k: int = 5, color: str | None = None) -> Prediction:
        return self.predict_batch([image], top_k=top_k, color=color)[0]

    def predict_batch(self, images: Iterable[ImageInput], top_k: int = 5, color: str | None = None) -> list[Prediction]:
        return self.top_k(self.scores(list(images), color), top_k)
