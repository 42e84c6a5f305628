"""INT8 with NNCF for both INT8 formats: post-training quantization with bias correction, and with
``--max-drop`` NNCF's accuracy control, which keeps the most sensitive operations in float until
the drop on the eval images is within budget.

``openvino-int8`` always uses it; ``onnx-int8`` with ``--int8-engine nncf``. Measured on the
hymenoptera fine-tune (153 val photos, 100 calibration images): NNCF's quantization of the ONNX
model agreed with FP32 on all 153, where onnxruntime's own ``quantize_static`` lost 1.96 top-1 points
(96.7% agreement) before edgeport's bias correction (``bias_correction``: 99.35%). But NNCF
quantizes some activations per channel and puts its QuantizeLinear after Clip (ReLU6), which keeps
onnxruntime's CPU provider from fusing most convolutions into QLinearConv (13 of 52): that model ran
at ×2.1–2.7 of FP32's latency in three interleaved runs and ×2.8 timed alone (18.8 vs 6.7 ms), so
``onnx-int8`` defaults to onnxruntime's quantizer plus bias correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["MAX_FLOAT_OPERATIONS", "AccuracyTarget", "nncf_method", "nncf_quantize", "float_compute_nodes_onnx", "float_compute_nodes_openvino"]

#: Accuracy control returns at most this many operations to float, one per iteration: each costs
#: speed, and a model that needs more is better shipped in FP32 (the gate then says so).
MAX_FLOAT_OPERATIONS = 10
_COMPUTE_ONNX = ("Conv", "Gemm", "MatMul")
_COMPUTE_OPENVINO = ("Convolution", "GroupConvolution", "MatMul")


@dataclass(frozen=True)
class AccuracyTarget:
    """What ``--eval``/``--max-drop`` ask of an INT8 format, in NNCF's terms."""

    tensors: np.ndarray  # (N, 3, H, W): the eval images through the runtime's preprocessing
    targets: np.ndarray  # per image: its label index, or FP32's top-1 when the images are unlabelled
    labelled: bool
    max_drop_pp: float  # top-1 points

    @property
    def metric_name(self) -> str:
        return "top-1 accuracy" if self.labelled else "top-1 agreement with FP32"

    def report(self, float_nodes: list[str]) -> dict[str, Any]:
        """The manifest's ``accuracy_control`` entry of a format built against this target."""
        return {"metric": self.metric_name, "max_drop_pp": self.max_drop_pp, "eval_images": len(self.tensors),
                "float_nodes": float_nodes}


def _nncf_parameters(scheme) -> dict[str, Any]:
    """``Int8Scheme`` → NNCF keywords. ``overflow_fix`` is NNCF's name for 7-bit weights
    (onnxruntime's ``reduce_range``): the saturation fix for U8S8 on x86 CPUs without VNNI."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    fix = OverflowFix.ENABLE if scheme.reduce_range else OverflowFix.DISABLE
    return {"advanced_parameters": AdvancedQuantizationParameters(overflow_fix=fix)}


class _Logits:
    """Logits of whatever NNCF hands the validation function: an ``onnx.ModelProto`` (ONNX backend;
    one onnxruntime session per model, kept for the per-image calls) or a compiled OpenVINO model."""

    def __init__(self) -> None:
        self._sessions: dict[int, tuple[Any, Any]] = {}

    def __call__(self, model: Any, batch: np.ndarray) -> np.ndarray:
        import onnx

        if isinstance(model, onnx.ModelProto):
            entry = self._sessions.get(id(model))
            if entry is None or entry[0] is not model:
                import onnxruntime as ort

                self._sessions = {id(model): (model, ort.InferenceSession(model.SerializeToString(),
                                                                         providers=["CPUExecutionProvider"]))}
                entry = self._sessions[id(model)]
            session = entry[1]
            return session.run(None, {session.get_inputs()[0].name: batch})[0]
        return np.asarray(model(batch)[0])  # openvino.CompiledModel


def _validation_fn(target: AccuracyTarget) -> Callable[[Any, Iterable[Any]], tuple[float, list[float]]]:
    logits = _Logits()

    def validate(model: Any, items: Iterable[tuple[np.ndarray, int]]) -> tuple[float, list[float]]:
        hits = [float(logits(model, x).argmax(1)[0] == target.targets[i]) for x, i in items]
        return float(np.mean(hits)), hits

    return validate


def nncf_method(accuracy: AccuracyTarget | None) -> str:
    """The manifest's ``int8_method`` of a model NNCF quantized."""
    return "nncf-ptq" if accuracy is None else "nncf-accuracy-control"


def nncf_quantize(model: Any, calib: np.ndarray, scheme, accuracy: AccuracyTarget | None = None) -> Any:
    """Quantize an ONNX ``ModelProto`` or an OpenVINO model on ``calib`` (N, 3, H, W), batch 1 like
    the device; with ``accuracy``, ``nncf.quantize_with_accuracy_control`` (absolute drop)."""
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    if isinstance(model, onnx.ModelProto):  # NNCF's ONNX engine feeds onnxruntime: {input name: array}
        name = model.graph.input[0].name
        feed: Callable[[np.ndarray], Any] = lambda x: {name: x}  # noqa: E731
    else:
        feed = lambda x: x  # noqa: E731
    # NNCF's full BiasCorrection (layer by layer, on the quantized model's own activations) instead of
    # FastBiasCorrection, on the IR only. ImageNet MobileNetV2, 100 hymenoptera train images, top-1
    # agreement with FP32 on the 153 val photos: IR 94.77% fast → 96.73% full (11 s → 19 s); the ONNX
    # engine gained nothing (95.42% both ways), so it keeps the fast one.
    fast_bias_correction = isinstance(model, onnx.ModelProto)
    calibration = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], feed)
    params = _nncf_parameters(scheme)
    if accuracy is None:
        return nncf.quantize(model, calibration, subset_size=len(calib), fast_bias_correction=fast_bias_correction, **params)
    validation = nncf.Dataset([(accuracy.tensors[i : i + 1], i) for i in range(len(accuracy.tensors))],
                              lambda item: feed(item[0]))
    return nncf.quantize_with_accuracy_control(
        model, calibration, validation, _validation_fn(accuracy), max_drop=accuracy.max_drop_pp / 100,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib), fast_bias_correction=fast_bias_correction,
        advanced_quantization_parameters=params["advanced_parameters"],
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=MAX_FLOAT_OPERATIONS),
    )


def float_compute_nodes_onnx(model) -> list[str]:
    """Conv/Gemm/MatMul nodes whose weights are not dequantized INT8: what accuracy control kept in
    float. (Weights, not activations: NNCF may quantize an activation a few ops upstream.)"""
    dequantized = {out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return [n.name for n in model.graph.node if n.op_type in _COMPUTE_ONNX and n.input[1] not in dequantized]


def float_compute_nodes_openvino(model) -> list[str]:
    """Convolution/MatMul operations whose weights trace back to a float constant, not an INT8 one
    (NNCF stores quantized weights as i8/u8 constants followed by Convert/Multiply)."""
    kept = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in _COMPUTE_OPENVINO:
            source = op.input_value(1).get_node()
            while source.get_type_name() != "Constant" and source.get_input_size():
                source = source.input_value(0).get_node()
            if source.get_element_type().is_real():
                kept.append(op.get_friendly_name())
    return kept
