"""PyTorch → ONNX with a dynamic batch axis, fixed H×W and the contract in ``metadata_props``."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from edgeport.runtime.atomic import atomic_write_bytes
from edgeport.runtime.backends import FEATURES_OUTPUT, LOGITS_OUTPUT
from edgeport.runtime.contract import METADATA_KEY, PreprocessContract
from torch import nn

from .onnx_target import OnnxTarget, apply_target

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OPSET", "export_onnx", "embed_contract", "read_contract", "strip_debug_metadata"]

INPUT_NAME, OUTPUT_NAME = "input", LOGITS_OUTPUT
OPSET = 20  # preferred; lowered to what an older --target-runtime implements


def embed_contract(model: onnx.ModelProto, contract: PreprocessContract) -> None:
    """Store the contract as JSON under one namespaced key (replacing an older one)."""
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=METADATA_KEY, value=contract.to_json())


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node metadata (Python stack traces with absolute paths, node names of
    the traced program): model files must not depend on where or by whom they were built."""

    def clean_graph(graph: onnx.GraphProto) -> None:
        for item in (*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer):
            if hasattr(item, "metadata_props"):
                del item.metadata_props[:]
            item.doc_string = ""
        del graph.metadata_props[:]
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    clean_graph(attr.g)
                for sub in attr.graphs:
                    clean_graph(sub)

    clean_graph(model.graph)
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""


def read_contract(model: onnx.ModelProto) -> PreprocessContract | None:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return PreprocessContract.from_json(prop.value)
    return None


def export_onnx(model: nn.Module, contract: PreprocessContract, path: Path, target: OnnxTarget | None = None,
                features: bool = False) -> onnx.ModelProto:
    """torch.onnx's dynamo exporter (deterministic: same model, same bytes) at an opset and IR version
    the target runtime loads (``onnx_target``), then ``onnx.checker``. ``features``: ``model`` returns
    (logits, features), exported as the outputs ``logits`` and ``features``."""
    model = model.eval().cpu()
    example = torch.zeros(1, 3, *contract.input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's chatter about its own internals
        program = torch.onnx.export(
            model,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, FEATURES_OUTPUT] if features else [OUTPUT_NAME],
            opset_version=min(OPSET, target.max_opset) if target else OPSET,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    strip_debug_metadata(proto)
    embed_contract(proto, contract)
    if target is not None:
        apply_target(proto, target)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write_bytes(path, lambda fh: fh.write(data))
    return proto
