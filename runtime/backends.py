"""Inference backends, looked up by name. Each one loads a model file and runs NCHW float32 batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from .contract import METADATA_KEY, PreprocessContract
from .errors import ContractError, ModelLoadError

__all__ = ["Backend", "BACKENDS", "register_backend", "create_backend", "backend_names"]


class Backend(Protocol):
    name: str
    contract: PreprocessContract

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 → (N, num_classes) float32 logits."""


BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable:
    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[name] = factory
        return factory

    return deco


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def create_backend(name: str, model_path: Path, threads: int | None = None) -> Backend:
    if name == "auto":
        name = "onnxruntime"  # the only backend for .onnx files until OpenVINO lands
    if name not in BACKENDS:
        raise ModelLoadError(f"unknown backend {name!r}; choose one of {['auto', *backend_names()]}")
    return BACKENDS[name](model_path, threads=threads)


@register_backend("onnxruntime")
class OnnxRuntimeBackend:
    """onnxruntime on the CPU; the contract comes from the model's own metadata_props."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int | None = None):
        import onnxruntime as ort  # imported here so `import edgeport.runtime` stays light

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                os.fspath(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelLoadError(f"{model_path}: onnxruntime cannot load it ({exc}); re-run edge-export") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ContractError(
                f"{model_path} carries no preprocessing contract (metadata key {METADATA_KEY!r}); "
                "export it with edge-export so the runtime knows its labels, size, mean and std"
            )
        self.contract = PreprocessContract.from_json(meta[METADATA_KEY], source=str(model_path))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{model_path}: expected one input and one output, got {len(inputs)}/{len(outputs)}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape  # e.g. ['batch', 3, 224, 224]
        if len(shape) != 4 or list(shape[1:]) != [3, *self.contract.input_size]:
            raise ContractError(
                f"{model_path}: model input shape {shape} disagrees with the contract's "
                f"3×{self.contract.input_size[0]}×{self.contract.input_size[1]}; re-export the model"
            )
        n_out = outputs[0].shape[-1]
        if isinstance(n_out, int) and n_out != self.contract.num_classes:
            raise ContractError(
                f"{model_path}: model has {n_out} outputs but the contract lists "
                f"{self.contract.num_classes} labels; re-export the model"
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]
