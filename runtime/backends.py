"""Inference backends, looked up by name. Each one loads a model file and runs NCHW float32 batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from .contract import METADATA_KEY, PreprocessContract
from .errors import ContractError, MissingDependencyError, ModelLoadError
from .privacy import disable_onnxruntime_events

__all__ = ["Backend", "BACKENDS", "register_backend", "create_backend", "backend_names", "LOGITS_OUTPUT",
           "FEATURES_OUTPUT"]

#: The graph outputs a model may have: the logits (always, first), and the pooled features the head reads, whitened
#: for the Mahalanobis score (a model whose "unknown" score needs them, ``confidence.FEATURE_SCORES``).
LOGITS_OUTPUT, FEATURES_OUTPUT = "logits", "features"


class Backend(Protocol):
    name: str
    contract: PreprocessContract
    has_features: bool

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 → (N, num_classes) float32 logits."""

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and, when the model has the ``features`` output, its (N, D) features (else None)."""


BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable:
    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[name] = factory
        return factory

    return deco


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def create_backend(name: str, model_path: Path, threads: int | None = None,
                   verified_bytes: Mapping[str, bytes] | None = None) -> Backend:
    """Load ``model_path`` on backend ``name``, and check the real output width with one run.

    ``verified_bytes`` (``bundle.ResolvedModel.verified_bytes``): load these bytes, the ones whose sha256
    was checked, instead of opening ``model_path`` again (which only names the model in messages).
    """
    if name not in BACKENDS:
        raise ModelLoadError(f"unknown backend {name!r}; choose one of {backend_names()}")
    backend = BACKENDS[name](model_path, threads=threads, verified_bytes=verified_bytes)
    _check_output_width(backend, model_path)
    return backend


def _check_output_width(backend: Backend, model_path: Path) -> None:
    """One zero image through the model: a dynamic class dimension hides the width from the graph, and a
    mismatch with the labels would otherwise crash mid-stream (too few labels) or be silently wrong (too many)."""
    contract = backend.contract
    try:
        out = np.asarray(backend.run(np.zeros((1, 3, *contract.input_size), np.float32)))
    except Exception as exc:  # the backends raise their own untyped errors
        raise ModelLoadError(f"{model_path}: a test run on a blank image failed ({exc}); re-run edge-export") from exc
    if out.shape != (1, contract.num_classes):
        raise ContractError(
            f"{model_path}: the model outputs shape {list(out.shape)} per image, but the contract lists "
            f"{contract.num_classes} labels (expected [1, {contract.num_classes}]); re-export the model"
        )


def _output_order(model_path: Path, names: list[str]) -> int | None:
    """The index of the features output among the graph's outputs (None when it has only logits); logits first."""
    if len(names) == 1:
        return None
    if len(names) == 2 and FEATURES_OUTPUT in names:
        return names.index(FEATURES_OUTPUT)
    raise ModelLoadError(f"{model_path}: expected the outputs [{LOGITS_OUTPUT!r}] or [{LOGITS_OUTPUT!r}, "
                         f"{FEATURES_OUTPUT!r}], got {names}; re-run edge-export")


def _checked_contract(model_path: Path, contract_json: str | None, input_shape: list, n_out: object) -> PreprocessContract:
    """The contract stored in the model, checked against the model's own input and output shapes."""
    if contract_json is None:
        raise ContractError(
            f"{model_path} carries no preprocessing contract (metadata key {METADATA_KEY!r}); "
            "export it with edge-export so the runtime knows its labels, size, mean and std"
        )
    contract = PreprocessContract.from_json(contract_json, source=str(model_path))
    if len(input_shape) != 4 or list(input_shape[1:]) != [3, *contract.input_size]:
        raise ContractError(
            f"{model_path}: model input shape {input_shape} disagrees with the contract's "
            f"3×{contract.input_size[0]}×{contract.input_size[1]}; re-export the model"
        )
    if isinstance(n_out, int) and n_out != contract.num_classes:
        raise ContractError(
            f"{model_path}: model has {n_out} outputs but the contract lists {contract.num_classes} labels; "
            "re-export the model"
        )
    return contract


@register_backend("onnxruntime")
class OnnxRuntimeBackend:
    """onnxruntime on the CPU; the contract comes from the model's own metadata_props."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int | None = None, verified_bytes: Mapping[str, bytes] | None = None):
        import onnxruntime as ort  # imported here so `import edgeport.runtime` stays light

        disable_onnxruntime_events(ort)
        options = ort.SessionOptions()
        # No spin-waiting between operators: a spinning intra-op thread holds its core while it waits, and on a small
        # device that core is the one the stream's reader thread needs to decode the next frame (and an idle camera box
        # would burn it between frames). Measured on a 2-core AVX2 EPYC, MobileNetV2 at batch 1, 2 threads, 100
        # ~500×375 JPEGs (benchmarks/README.md, "edge-predict on devices"): streamed per photo 8.7-9.2 ms without
        # spinning against 10.1-10.6 ms with it, model alone 6.1-6.2 against 5.9-6.1 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        model: str | bytes = os.fspath(model_path)
        if verified_bytes is not None:
            model = verified_bytes[model_path.name]
            external = [(name, data) for name, data in verified_bytes.items() if name != model_path.name]
            if external:  # the external-data files, from the verified bytes too (never opened by name)
                options.add_external_initializers_from_files_in_memory(
                    [n for n, _ in external], [d for _, d in external], [len(d) for _, d in external])
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
            # onnxruntime reads in-memory external initializers from these buffers without copying them:
            # they must live as long as the session.
            self._buffers = verified_bytes
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelLoadError(f"{model_path}: onnxruntime cannot load it ({exc}); re-run edge-export") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{model_path}: expected one input, got {len(inputs)}")
        features_at = _output_order(model_path, [o.name for o in outputs])
        logits_out = outputs[1 - features_at if features_at is not None else 0]
        self.input_name, self.has_features = inputs[0].name, features_at is not None
        self._names = [logits_out.name] + ([outputs[features_at].name] if features_at is not None else [])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.contract = _checked_contract(model_path, meta.get(METADATA_KEY), inputs[0].shape, logits_out.shape[-1])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self._names[:1], {self.input_name: batch})[0]

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = self.session.run(self._names, {self.input_name: batch})
        return outs[0], (outs[1] if self.has_features else None)


#: Where the contract lives in an OpenVINO IR's rt_info.
OPENVINO_RT_PATH = ["edgeport", "contract"]


@register_backend("openvino")
class OpenVinoBackend:
    """OpenVINO on the CPU, configured for single-stream latency (what a camera loop needs).

    With no settings OpenVINO's CPU plugin may pick a throughput configuration; LATENCY with the
    thread count pinned keeps batch-1 latency on a small CPU competitive with onnxruntime.
    """

    name = "openvino"

    def __init__(self, model_path: Path, threads: int | None = None, verified_bytes: Mapping[str, bytes] | None = None):
        try:
            import openvino as ov
        except ImportError as exc:
            raise MissingDependencyError("the openvino backend needs OpenVINO: pip install 'edgeport[openvino]'") from exc
        core = ov.Core()
        try:
            if verified_bytes is not None:  # the IR's .xml and .bin exactly as verified
                weights = verified_bytes.get(model_path.with_suffix(".bin").name, b"")
                model = core.read_model(model=verified_bytes[model_path.name], weights=weights)
            else:
                model = core.read_model(os.fspath(model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses without types
            raise ModelLoadError(f"{model_path}: OpenVINO cannot read it ({exc}); re-run edge-export") from exc
        if len(model.inputs) != 1:
            raise ModelLoadError(f"{model_path}: expected one input, got {len(model.inputs)}")
        names = [output.get_any_name() for output in model.outputs]
        features_at = _output_order(model_path, names)
        self._logits_at = 1 - features_at if features_at is not None else 0
        self._features_at, self.has_features = features_at, features_at is not None
        contract_json = model.get_rt_info(OPENVINO_RT_PATH).astype(str) if model.has_rt_info(OPENVINO_RT_PATH) else None
        in_shape = [d.get_length() if d.is_static else "?" for d in model.inputs[0].get_partial_shape()]
        out_shape = model.outputs[self._logits_at].get_partial_shape()
        out_dim = out_shape[out_shape.rank.get_length() - 1]  # no negative index before OpenVINO 2024.x
        self.contract = _checked_contract(model_path, contract_json, in_shape, out_dim.get_length() if out_dim.is_static else None)
        # f32 explicitly: on CPUs with AVX-512 BF16 or AMX, OpenVINO's default precision is bf16, which ran the
        # FP32 IR of MobileNetV2 with logits up to 0.76 off PyTorch's (measured on an AVX-512 BF16 EPYC); a
        # deployed model must compute what was verified at export.
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._core, self._model, self._config = core, model, config
        # The IR's weights may be shared with the bytes they were read from (no copy): keep them alive as long as
        # the model and its compiled requests.
        self._buffers = verified_bytes
        self._requests: dict[tuple[int, ...], Any] = {}
        self._request_for((1, *in_shape[1:]) if all(isinstance(d, int) for d in in_shape[1:]) else None)

    def _request_for(self, shape: tuple[int, ...] | None):
        """An infer request compiled for exactly this input shape: OpenVINO's CPU plugin runs a
        static shape faster than the exported dynamic batch dimension (batch 1, MobileNetV2, one
        interleaved run on a loaded 2-core machine: 78 ms dynamic, 65 ms static, 58 ms static with one
        stream), so each batch size seen gets its own compiled model (batch 1 up front: the camera case)."""
        if shape not in self._requests:
            if shape is not None:
                self._model.reshape({self._model.inputs[0]: list(shape)})
            self._requests[shape] = self._core.compile_model(self._model, "CPU", self._config).create_infer_request()
        return self._requests[shape]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_with_features(batch)[0]

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        request = self._request_for(tuple(batch.shape)) if None not in self._requests else self._requests[None]
        outs = request.infer({0: batch})
        features = outs[self._features_at].copy() if self._features_at is not None else None
        return outs[self._logits_at].copy(), features
