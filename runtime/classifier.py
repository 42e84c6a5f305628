"""The Python API devices use: ``Classifier(path).predict(image)``."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .backends import create_backend
from .bundle import resolve_model
from .conformance import FormatResult, read_kit, self_test_classifier
from .contract import PreprocessContract
from .errors import ConformanceError, ImageDecodeError, ModelLoadError, UsageError
from .frames import Frame
from .preprocess import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ImageLimits,
    describe_source,
    preprocess,
    preprocess_fast,
)
from .records import UNKNOWN, StreamResult
from .reload import BundleWatcher, bundle_state, identity, load_checked, swap_record
from .signing import bundle_root_of, verify_key_from

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
    ``exact_preprocess=True`` uses the contract's reference resize instead of the fast JPEG path
    (DCT-domain downscaled decoding; same top-1 on ≥ 99.5% of photos, see benchmarks/README.md).
    ``max_pixels`` / ``max_aspect``: the work one image may cost (docs/device-limits.md); a picture past
    them gets an error result (a JPEG over the budget is draft-decoded within it instead).
    ``verify_key`` (a PEM public key or PEM CA certificates; default ``$EDGEPORT_VERIFY_KEY``, ``False``
    for none): the bundle must carry a model-signing signature it vouches for (docs/fleet-updates.md).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "auto",
        threads: int | None = None,
        format: str | None = None,
        batch_size: int = 8,
        exact_preprocess: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_aspect: float = DEFAULT_MAX_ASPECT,
        verify_key: str | os.PathLike | None | bool = None,
    ):
        self.limits = ImageLimits(max_pixels, max_aspect)  # checked before the model loads
        self.source_path = Path(path)
        self.verify_key = verify_key_from(verify_key)
        self._options = {"backend": backend, "threads": threads, "format": format}
        resolved = resolve_model(path, format=format, backend=backend, verify_key=self.verify_key)
        self.model_path = resolved.path
        self.format = resolved.format
        self.manifest = resolved.manifest
        self._backend = create_backend(resolved.backend, resolved.path, threads=threads,
                                       verified_bytes=resolved.verified_bytes)
        self.contract: PreprocessContract = self._backend.contract
        self.batch_size = batch_size
        self.exact_preprocess = exact_preprocess
        self._watcher: BundleWatcher | None = None

    def reload(self) -> dict:
        """Load the bundle now at this classifier's path, check it (sha256, signature when a key is set,
        self-test) and swap to it; returns the ``model_swap`` record. On any failure this raises and the
        old model keeps serving. Call it between frames, from the thread that classifies."""
        if not self.source_path.is_dir():
            raise UsageError(f"reload() needs a bundle directory (or a symlink to one); {self.source_path} is not one")
        state = bundle_state(self.source_path)
        if state is None:
            raise ModelLoadError(f"no bundle at {self.source_path} right now (an update in progress?); try again")
        old = identity(self)
        candidate, self_test = load_checked(self, state)
        self._adopt(candidate)
        return swap_record(self.source_path, old, identity(self), self_test, self.verify_key is not None)

    def auto_reload(self, on_event: Callable[[dict], None], interval: float = 1.0) -> BundleWatcher:
        """Watch the bundle path in the background; ``stream()`` swaps to a new bundle between two frames once
        it passed every check. ``on_event`` gets one record per swap or rejected update (docs/fleet-updates.md)."""
        self.stop_reload()
        self._watcher = BundleWatcher(self, on_event, interval).start()
        return self._watcher

    def stop_reload(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def _adopt(self, other: Classifier) -> None:
        """Take over ``other``'s loaded model (the swap itself: a few attribute assignments, no I/O)."""
        self.model_path, self.format, self.manifest = other.model_path, other.format, other.manifest
        self._backend, self.contract = other._backend, other.contract

    def self_test(self) -> FormatResult:
        """Replay the bundle's conformance kit on this loaded format, on this machine (docs/fleet-updates.md):
        max |Δlogit| and top-1 agreement against the export's logits, preprocessing max |Δ|."""
        root = bundle_root_of(self.model_path) if self.manifest is not None else None
        if root is None:
            raise ConformanceError(f"{self.model_path} is not in a bundle: a self-test needs the bundle's conformance kit")
        fmt = self.format or next((n for n, e in self.manifest["formats"].items()
                                   if (root / e["file"]).resolve() == self.model_path.resolve()), None)
        if fmt is None:
            raise ConformanceError(f"{self.model_path} is not a format of {root}; pass the bundle directory")
        return self_test_classifier(self, read_kit(root), fmt)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def backend(self) -> str:
        return self._backend.name

    def preprocess(self, image: ImageInput, color: str | None = None) -> np.ndarray:
        return (preprocess if self.exact_preprocess else preprocess_fast)(image, self.contract, color, self.limits)

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

    def stream(
        self,
        frames: Iterable[Frame | ImageInput],
        top_k: int = 5,
        threshold: float | None = None,
        color: str | None = None,
        batch: int = 1,
    ) -> Iterator[StreamResult]:
        """One ``StreamResult`` per frame, in order, as frames arrive; a frame that cannot be
        decoded gives an error result and the stream goes on.

        ``frames`` are ``sources.Frame`` items or plain images (``color`` applies to ndarrays);
        ``threshold``: below this best score the label is ``"unknown"``; ``batch`` > 1 runs that
        many frames per inference call (for files; a live camera wants 1).
        """
        items = (f if isinstance(f, Frame) else Frame(describe_source(f), f, color=color) for f in frames)
        while chunk := list(itertools.islice(items, batch)):
            if self._watcher is not None:
                self._watcher.take()  # a checked new bundle is swapped in here, between two frames
            yield from self._classify_chunk(chunk, top_k, threshold)

    def _classify_chunk(self, chunk: list[Frame], top_k: int, threshold: float | None) -> list[StreamResult]:
        results: list[StreamResult | None] = [None] * len(chunk)
        tensors, kept, t0 = [], [], time.perf_counter()
        for i, frame in enumerate(chunk):
            error = frame.error
            if error is None:
                try:
                    tensors.append(self.preprocess(frame.image, frame.color))
                    kept.append(i)
                except ImageDecodeError as exc:
                    error = exc.reason
                except TypeError as exc:  # not an image at all: a bad frame, not a bad stream
                    error = str(exc)
            if error is not None:
                results[i] = StreamResult(frame.source, frame.index, frame.timestamp, error=error)
        if tensors:
            probabilities = softmax(self.logits_from_tensor(np.stack(tensors)))
            preds = self.top_k(probabilities, top_k)
            per_frame_ms = (time.perf_counter() - t0) * 1000 / len(tensors)
            for i, pred, row in zip(kept, preds, probabilities):
                frame = chunk[i]
                if not np.isfinite(row).all():  # NaN compares false with every threshold: never an "ok" result
                    results[i] = StreamResult(frame.source, frame.index, frame.timestamp,
                                              error="the model produced non-finite scores (NaN/inf) for this image")
                    continue
                label = UNKNOWN if threshold is not None and pred.score < threshold else pred.label
                results[i] = StreamResult(frame.source, frame.index, frame.timestamp, pred.top, label, per_frame_ms)
        return results  # type: ignore[return-value]
