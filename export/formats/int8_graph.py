"""Reading a quantized ONNX graph: grouped convolutions, quantized-operator counts, and the refusal of
an "int8" file that did not quantize anything (Ultralytics #17158)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from edgeport.runtime.errors import VerificationError

from .int8_scheme import Int8Scheme

__all__ = ["conv_group", "depthwise_weight_overrides", "quantized_op_counts", "check_really_quantized"]

_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def conv_group(node: onnx.NodeProto) -> int:
    """A Conv node's ``group`` attribute (1 when absent); > 1 marks grouped/depthwise convolutions."""
    return next((attr.i for attr in node.attribute if attr.name == "group"), 1)


def depthwise_weight_overrides(model: onnx.ModelProto, scheme: Int8Scheme) -> dict[str, list[dict[str, Any]]]:
    """onnxruntime's ``TensorQuantOverrides`` giving depthwise convolution weights all 8 bits where
    the scheme reduces the rest (see ``onnx_int8``); empty where nothing is reduced."""
    if not scheme.reduce_range:
        return {}
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    overrides = {}
    for node in model.graph.node:
        group = conv_group(node)
        weight = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        if group > 1 and weight in shapes and shapes[weight][0] == group and shapes[weight][1] == 1:
            overrides[weight] = [{"axis": 0, "reduce_range": False}]
    return overrides


def quantized_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in _QUANT_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def check_really_quantized(int8_path: Path, fp32_path: Path) -> dict[str, Any]:
    """Refuse an "int8" model with no quantized ops or that is not smaller (Ultralytics #17158)."""
    counts = quantized_op_counts(onnx.load(int8_path))
    size, fp32_size = int8_path.stat().st_size, fp32_path.stat().st_size
    if not counts.get("DequantizeLinear") and not counts.get("QLinearConv") and not counts.get("ConvInteger"):
        raise VerificationError(f"{int8_path} contains no quantized operators; the INT8 export did not quantize anything")
    if size >= fp32_size * 0.5:
        raise VerificationError(f"{int8_path} is {size} bytes, not much smaller than FP32's {fp32_size}: weights were not quantized")
    return {"quantized_ops": counts, "bytes": size, "size_ratio_vs_fp32": round(size / fp32_size, 4)}
