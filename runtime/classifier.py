"""The Python API devices use: ``Classifier(path).predict(image)``."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .backends import create_backend
from .bundle import bundle_root_of, resolve_model
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
from .signing import verify_key_from

if TYPE_CHECKING:
    from .service.capture import Capture
    from .service.sources import Source

__all__ = ["Classifier", "Prediction", "Prepared", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # stable for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prepared:
    """A frame decoded and preprocessed, ready for inference: ``tensor`` (C, H, W), or ``error``."""

    frame: Frame
    tensor: np.ndarray | None
    error: str | None
    prepare_ms: float


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


def _as_frames(frames: Iterable[Frame | ImageInput], color: str | None) -> Iterator[Frame]:
    return (f if isinstance(f, Frame) else Frame(describe_source(f), f, color=color) for f in frames)


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
        frames: Iterable[Frame | ImageInput] | Mapping[str, Iterable[Frame | ImageInput]] | Sequence[Source],
        top_k: int = 5,
        threshold: float | None = None,
        color: str | None = None,
        batch: int | str = 1,
        sinks: Iterable[Callable[[dict], None]] = (),
        capture: Capture | None = None,
    ) -> Iterator[StreamResult]:
        """One ``StreamResult`` per frame, in order, as frames arrive; a frame that cannot be
        decoded gives an error result and the stream goes on.

        ``frames`` are ``sources.Frame`` items or plain images (``color`` applies to ndarrays);
        ``threshold``: below this best score the label is ``"unknown"``; ``batch`` > 1 runs that
        many frames per inference call (for files; a live camera wants 1).

        Several sources: a mapping ``{source id: frames}`` or a list of ``service.Source`` (cameras, streams
        with reconnect …). Each source is read in its own thread into a bounded queue and frames are batched
        across sources (``batch="auto"``: one per source); results carry ``source_id`` and source events
        (``service.sources.SourceEvent``: lost/back/ended) are yielded between them (docs/service.md).
        ``sinks``: plain callables, each gets every record (the jsonl dict) as it is produced.
        ``capture``: a ``service.capture.Capture`` that keeps the frames the model was unsure about (``--capture``).
        """
        from .records import to_record
        from .service import frames_source, serve
        from .service.sources import Source

        sinks = list(sinks)
        if isinstance(frames, Mapping) or (isinstance(frames, (list, tuple)) and frames and all(isinstance(s, Source) for s in frames)):
            sources = list(frames) if not isinstance(frames, Mapping) else [
                src if isinstance(src, Source) else frames_source(name, _as_frames(src, color)) for name, src in frames.items()]
            yield from serve(self, sources, sinks, top_k=top_k, threshold=threshold, batch=batch, capture=capture)
            return
        items = _as_frames(frames, color)
        batch = 1 if batch == "auto" else int(batch)
        while chunk := list(itertools.islice(items, batch)):
            if self._watcher is not None:
                self._watcher.take()  # a checked new bundle is swapped in here, between two frames
            for frame, result in zip(chunk, self._classify_chunk(chunk, top_k, threshold)):
                if capture is not None:
                    capture.consider(frame, result)
                if sinks:
                    record = to_record(result)  # once per result, not once per sink
                    for sink in sinks:
                        sink(record)
                yield result

    def prepare(self, frame: Frame) -> Prepared:
        """Decode and preprocess one frame (the part a source's own thread can do): its tensor, or its error."""
        t0 = time.perf_counter()
        error = frame.error
        if error is None:
            try:
                return Prepared(frame, self.preprocess(frame.image, frame.color), None, (time.perf_counter() - t0) * 1000)
            except ImageDecodeError as exc:
                error = exc.reason
            except TypeError as exc:  # not an image at all: a bad frame, not a bad stream
                error = str(exc)
        return Prepared(frame, None, error, 0.0)

    def classify_prepared(self, items: Sequence[Prepared], top_k: int = 5, threshold: float | None = None) -> list[StreamResult]:
        """One result per prepared frame, in order: one inference call for all of them (batching across sources).
        ``latency_ms`` is the frame's own preprocessing plus its share of the inference call."""
        results: list[StreamResult | None] = [None] * len(items)
        kept = [i for i, item in enumerate(items) if item.tensor is not None]
        for i, item in enumerate(items):
            if item.tensor is None:
                f = item.frame
                results[i] = StreamResult(f.source, f.index, f.timestamp, error=item.error, source_id=f.source_id)
        if kept:
            t0 = time.perf_counter()
            probabilities = softmax(self.logits_from_tensor(np.stack([items[i].tensor for i in kept])))
            preds = self.top_k(probabilities, top_k)
            infer_ms = (time.perf_counter() - t0) * 1000 / len(kept)
            for i, pred, row in zip(kept, preds, probabilities):
                f = items[i].frame
                if not np.isfinite(row).all():  # NaN compares false with every threshold: never an "ok" result
                    results[i] = StreamResult(f.source, f.index, f.timestamp, source_id=f.source_id,
                                              error="the model produced non-finite scores (NaN/inf) for this image")
                    continue
                label = UNKNOWN if threshold is not None and pred.score < threshold else pred.label
                results[i] = StreamResult(f.source, f.index, f.timestamp, pred.top, label, items[i].prepare_ms + infer_ms,
                                          source_id=f.source_id)
        return results  # type: ignore[return-value]

    def _classify_chunk(self, chunk: list[Frame], top_k: int, threshold: float | None) -> list[StreamResult]:
        return self.classify_prepared([self.prepare(frame) for frame in chunk], top_k, threshold)
