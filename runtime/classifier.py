"""The Python API devices use: ``Classifier(path).predict(image)``."""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .backends import Backend, create_backend
from .bundle import resolve_model
from .confidence import FEATURE_SCORES, MahalanobisStats, ood_score, scaled_softmax, softmax
from .contract import PreprocessContract
from .errors import ImageDecodeError, ModelLoadError, UsageError
from .frames import Frame
from .manifest import OOD_STATS_NAME, bundle_root_of
from .preprocess import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ImageLimits,
    preprocess,
    preprocess_fast,
)
from .records import UNKNOWN, StreamResult
from .signing import verify_key_from

__all__ = ["Classifier", "LoadOptions", "Prediction", "Prepared", "UnknownCheck", "softmax"]

#: Methods that moved out of the class when the runtime was layered (they are built on its public API now).
_MOVED = {
    "self_test": "edgeport.runtime.conformance.self_test(clf)",
    "reload": "edgeport.runtime.reload.reload_now(clf)",
    "auto_reload": "edgeport.runtime.reload.HotReloader(clf, on_event, interval).start(), passed to the stream as reloader=",
    "stop_reload": "HotReloader.stop()",
    "stream": "edgeport.runtime.stream.classify_stream(clf, frames, ...) (one source) or "
              "edgeport.runtime.stream.Stream(clf, sources, ...) (several)",
}


@dataclass(frozen=True)
class Prepared:
    """A frame decoded and preprocessed, ready for inference: ``tensor`` (C, H, W), or ``error``.

    ``contract`` is the contract the tensor was made with: a frame prepared ahead of inference (a prefetch
    queue) and then met by a model swap is prepared again with the new model's contract, never classified
    with the old one's mean/std or size."""

    frame: Frame
    tensor: np.ndarray | None
    error: str | None
    prepare_ms: float
    contract: PreprocessContract | None = None


@dataclass(frozen=True)
class LoadOptions:
    """How a classifier was loaded, so that a replacement (hot reload) loads the same way."""

    backend: str = "auto"
    threads: int | None = None
    format: str | None = None
    batch_size: int = 8
    exact_preprocess: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect: float = DEFAULT_MAX_ASPECT
    verify_key: str | os.PathLike | None | bool = False
    unknown: bool = True  # False: never call a frame unknown (``--no-unknown``)
    unknown_below: float | None = None  # overrides the model's threshold (``--unknown-below``)

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UnknownCheck:
    """The served model's "unknown" rule: its score, the threshold below which a frame is unknown, and the
    Mahalanobis statistics when the score needs them (``confidence``)."""

    score: str
    threshold: float
    stats: MahalanobisStats | None = None

    def scores(self, logits: np.ndarray, features: np.ndarray | None, temperature: float | None) -> np.ndarray:
        return ood_score(self.score, logits, temperature, features, self.stats)


def _mahalanobis_stats(data: bytes | None, num_classes: int, where: Path) -> MahalanobisStats:
    if data is None:
        raise ModelLoadError(f"{where}: its unknown score needs {OOD_STATS_NAME} from its bundle, which is not there; "
                             "load the bundle folder edge-export wrote, or pass --no-unknown")
    try:
        return MahalanobisStats.from_array(np.load(io.BytesIO(data), allow_pickle=False), num_classes)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{where}: {OOD_STATS_NAME} is unreadable ({exc}); re-run edge-export") from exc


def _unknown_check(contract: PreprocessContract, backend: Backend, stats: bytes | None, options: LoadOptions,
                   where: Path) -> UnknownCheck | None:
    """What the model's contract says about "unknown", with the load options' overrides; None: never unknown."""
    if not options.unknown:
        return None
    rule = contract.ood
    if rule is None:
        if options.unknown_below is not None:
            raise UsageError(f"--unknown-below: {where} carries no unknown score (exported before edgeport fitted one, or "
                             "an ImageNet model); re-train and re-export it, or use --threshold for a cut on the top score")
        return None
    loaded = None
    if rule.score in FEATURE_SCORES:
        if not backend.has_features:
            raise ModelLoadError(f"{where}: its unknown score ({rule.score}) needs the model's 'features' output, which "
                                 "this file lacks; re-run edge-export, or pass --no-unknown")
        loaded = _mahalanobis_stats(stats, contract.num_classes, where)
        features = backend.run_with_features(np.zeros((1, 3, *contract.input_size), np.float32))[1]
        if features is None or features.shape != (1, loaded.dim):
            raise ModelLoadError(f"{where}: its features output is {None if features is None else list(features.shape)} "
                                 f"per image, but {OOD_STATS_NAME} is for {loaded.dim} features; re-run edge-export")
    threshold = options.unknown_below if options.unknown_below is not None else rule.threshold
    return UnknownCheck(rule.score, float(threshold), loaded)


@dataclass(frozen=True)
class Prediction:
    """Top-k (label, probability) pairs, best first; with an "unknown" rule, whether the image is unknown and its
    score (higher = more like the training data)."""

    top: tuple[tuple[str, float], ...]
    unknown: bool = False
    ood_score: float | None = None

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def score(self) -> float:
        return self.top[0][1]


class Classifier:
    """An exported edgeport model: a bundle directory (sha256-verified) or a single model file
    (``.onnx`` for onnxruntime, ``.xml`` OpenVINO IR). It loads, preprocesses and predicts: nothing else.
    Self-test, hot reload and streams are built on its public API (``conformance``, ``reload``, ``stream``).

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
        unknown: bool = True,
        unknown_below: float | None = None,
    ):
        self.limits = ImageLimits(max_pixels, max_aspect)  # checked before the model loads
        self.source_path = Path(path)
        self.verify_key = verify_key_from(verify_key)
        self._options = LoadOptions(backend, threads, format, batch_size, exact_preprocess, max_pixels, max_aspect,
                                    self.verify_key or False, unknown, unknown_below)
        resolved = resolve_model(path, format=format, backend=backend, verify_key=self.verify_key)
        self.model_path = resolved.path
        self.format = resolved.format
        self.manifest = resolved.manifest
        self._backend = create_backend(resolved.backend, resolved.path, threads=threads,
                                       verified_bytes=resolved.verified_bytes)
        self.contract: PreprocessContract = self._backend.contract
        #: The "unknown" rule served (None: frames are never called unknown); swapped with the model.
        self.unknown = _unknown_check(self.contract, self._backend, resolved.ood_stats, self._options, resolved.path)
        self.batch_size = batch_size
        self.exact_preprocess = exact_preprocess

    def __getattr__(self, name: str) -> Any:
        if name in _MOVED:
            raise AttributeError(f"Classifier.{name}() moved out of the class: use {_MOVED[name]} (docs/runtime.md)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def options(self) -> LoadOptions:
        """The options this classifier was loaded with (read-only): a replacement loads with the same ones."""
        return self._options

    def swap_to(self, other: Classifier) -> None:
        """Serve ``other``'s loaded model from now on (the swap itself: a few attribute assignments, no I/O).
        Call it between frames, from the thread that classifies; frames prepared before it are prepared again."""
        self.model_path, self.format, self.manifest = other.model_path, other.format, other.manifest
        self._backend, self.contract, self.unknown = other._backend, other.contract, other.unknown

    def bundle_facts(self) -> dict[str, Any]:
        """The served bundle: its real folder, the format and the model file's sha256 (from the verified manifest).
        Both sides of the path comparison are resolved, so a bundle reached through a symlink or a relative
        path (``/srv/model/current`` → ``v2``) gives the same facts as its real folder."""
        root = bundle_root_of(self.model_path)
        real = self.model_path.resolve()
        rel = real.relative_to(root).as_posix() if root is not None and real.is_relative_to(root) else None
        sha = (self.manifest or {}).get("files", {}).get(rel, {}).get("sha256") if rel else None
        return {"bundle": str(root) if root else None, "format": self.format, "sha256": sha}

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def backend(self) -> str:
        return self._backend.name

    def preprocess(self, image: ImageInput, color: str | None = None) -> np.ndarray:
        return self._preprocess(image, color, self.contract)

    def _preprocess(self, image: ImageInput, color: str | None, contract: PreprocessContract) -> np.ndarray:
        return (preprocess if self.exact_preprocess else preprocess_fast)(image, contract, color, self.limits)

    def logits_from_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Run already-preprocessed ``(N, 3, H, W)`` float32 input, in chunks of ``batch_size``."""
        outs = [self._backend.run(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.contract.num_classes), np.float32)

    def logits(self, images: Sequence[ImageInput], color: str | None = None) -> np.ndarray:
        if not images:
            return np.zeros((0, self.contract.num_classes), np.float32)
        return self.logits_from_tensor(np.stack([self.preprocess(im, color) for im in images]))

    def outputs_from_tensor(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities ``(N, num_classes)`` of preprocessed input, and each image's "unknown" score
        (None without a rule). Read once: a swap from another thread must not mix two models' rules."""
        backend, contract, unknown = self._backend, self.contract, self.unknown
        need = unknown is not None and unknown.stats is not None
        logits, features = [], []
        for i in range(0, len(batch), self.batch_size):
            out, feats = backend.run_with_features(batch[i: i + self.batch_size]) if need else \
                (backend.run(batch[i: i + self.batch_size]), None)
            logits.append(out)
            features.append(feats)
        if not logits:
            return np.zeros((0, contract.num_classes), np.float32), None
        z = np.concatenate(logits, axis=0)
        probabilities = scaled_softmax(z, contract.temperature)
        if unknown is None:
            return probabilities, None
        return probabilities, unknown.scores(z, np.concatenate(features) if need else None, contract.temperature)

    def scores(self, images: Sequence[ImageInput], color: str | None = None) -> np.ndarray:
        """Class probabilities (temperature-scaled when the model carries a temperature), shape ``(N, num_classes)``,
        columns in ``labels`` order."""
        if not images:
            return np.zeros((0, self.contract.num_classes), np.float32)
        return self.outputs_from_tensor(np.stack([self.preprocess(im, color) for im in images]))[0]

    def top_k(self, probabilities: np.ndarray, k: int = 5) -> list[Prediction]:
        k = max(1, min(k, self.contract.num_classes))
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
        return [
            Prediction(tuple((self.labels[i], float(p[i])) for i in idx)) for p, idx in zip(probabilities, order)
        ]

    def predict(self, image: ImageInput, top_k: int = 5, color: str | None = None) -> Prediction:
        return self.predict_batch([image], top_k=top_k, color=color)[0]

    def predict_batch(self, images: Iterable[ImageInput], top_k: int = 5, color: str | None = None) -> list[Prediction]:
        images = list(images)
        if not images:
            return []
        unknown = self.unknown
        probabilities, ood = self.outputs_from_tensor(np.stack([self.preprocess(im, color) for im in images]))
        predictions = self.top_k(probabilities, top_k)
        if ood is None or unknown is None:
            return predictions
        return [Prediction(p.top, bool(s < unknown.threshold), float(s)) for p, s in zip(predictions, ood)]

    def prepare(self, frame: Frame) -> Prepared:
        """Decode and preprocess one frame (the part a source's own thread can do): its tensor, or its error."""
        t0 = time.perf_counter()
        error = frame.error
        contract = self.contract  # read once: a swap from another thread must not split one frame's work
        if error is None:
            try:
                tensor = self._preprocess(frame.image, frame.color, contract)
                return Prepared(frame, tensor, None, (time.perf_counter() - t0) * 1000, contract)
            except ImageDecodeError as exc:
                error = exc.reason
            except TypeError as exc:  # not an image at all: a bad frame, not a bad stream
                error = str(exc)
        return Prepared(frame, None, error, 0.0, contract)

    def classify_prepared(self, items: Sequence[Prepared], top_k: int = 5, threshold: float | None = None) -> list[StreamResult]:
        """One result per prepared frame, in order: one inference call for all of them (batching across sources).
        ``latency_ms`` is the frame's own preprocessing plus its share of the inference call. A frame prepared
        with another contract than the one served now (a swap happened since) is prepared again first."""
        items = [item if item.contract is None or item.contract is self.contract or item.contract == self.contract
                 else self.prepare(item.frame)
                 for item in items]
        results: list[StreamResult | None] = [None] * len(items)
        kept = [i for i, item in enumerate(items) if item.tensor is not None]
        for i, item in enumerate(items):
            if item.tensor is None:
                f = item.frame
                results[i] = StreamResult(f.source, f.index, f.timestamp, error=item.error, source_id=f.source_id)
        if kept:
            t0 = time.perf_counter()
            unknown = self.unknown
            probabilities, ood = self.outputs_from_tensor(np.stack([items[i].tensor for i in kept]))
            preds = self.top_k(probabilities, top_k)
            infer_ms = (time.perf_counter() - t0) * 1000 / len(kept)
            for n, (i, pred, row) in enumerate(zip(kept, preds, probabilities)):
                f = items[i].frame
                if not np.isfinite(row).all():  # NaN compares false with every threshold: never an "ok" result
                    results[i] = StreamResult(f.source, f.index, f.timestamp, source_id=f.source_id,
                                              error="the model produced non-finite scores (NaN/inf) for this image")
                    continue
                score = None if ood is None else float(ood[n])
                flagged = None if score is None or unknown is None else bool(score < unknown.threshold)
                label = UNKNOWN if flagged or (threshold is not None and pred.score < threshold) else pred.label
                results[i] = StreamResult(f.source, f.index, f.timestamp, pred.top, label, items[i].prepare_ms + infer_ms,
                                          source_id=f.source_id, unknown=flagged, ood_score=score)
        return results  # type: ignore[return-value]
