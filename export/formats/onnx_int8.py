"""onnx-int8: a QDQ ONNX model for onnxruntime, quantized by onnxruntime's static post-training
quantization (default: per-channel weights, ``--calib-method``) or by NNCF (``--int8-engine nncf``,
see ``nncf_int8`` for why it is not the default), with the activation/weight types chosen for the
CPU that will run the model.

Why a CPU-aware choice: without VNNI (AVX2 and plain AVX-512 CPUs) onnxruntime's U8S8 kernels
multiply-accumulate in 16 bits and can saturate; the onnxruntime docs advise ``reduce_range`` (7-bit
weights) or U8U8 there. With VNNI, and on ARM with dot-product instructions, U8S8 is both exact and
fastest. Only the GEMM kernels (stem and pointwise convolutions, the classifier) saturate:
onnxruntime's depthwise kernel accumulates in 32 bits (``tests/test_int8.py`` proves both on real
``QLinearConv`` sessions), so depthwise weights keep all 8 bits. ``python -m research.int8_schemes
BUNDLE`` (top-1 agreement with FP32 on the 296 hymenoptera photos calibration did not use, with bias
correction): ImageNet MobileNetV2 91.55% with 7-bit depthwise weights, 93.58% with 8-bit ones, at the
same speed; U8U8 (8 bits everywhere) also 93.58%, but at ×0.83–1.02 of FP32's latency against
×0.64–0.71 (three runs over both benchmark bundles, same architecture).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import onnx
from edgeport.runtime.atomic import atomic_write_bytes
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import UsageError

from .calibration import CalibrationReader, calibration_tensors
from .int8_graph import check_really_quantized, depthwise_weight_overrides
from .int8_scheme import CALIB_METHODS, Int8Scheme, choose_scheme
from .onnx_fp32 import INPUT_NAME, embed_contract, strip_debug_metadata
from .onnx_target import OnnxTarget, apply_target
from .reconstruction import RoundingOptions, reconstruct_weights
from .registry import BuildContext, register_format, require_calibration

__all__ = ["quantize_onnx", "quantize_onnx_nncf", "build_onnx_int8"]



@contextmanager
def _pre_processed(fp32_path: Path) -> Iterator[Path]:
    """onnxruntime's ``quant_pre_process`` (shape inference, graph clean-up) of the FP32 model, in a
    temporary folder: what both ONNX quantizers start from."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgeport-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        yield pre


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    contract: PreprocessContract,
    calib_images: Sequence[Path],
    scheme: Int8Scheme,
    method: str = "minmax",
    bias_correction: bool = True,
    depthwise_8bit: bool = True,
    target: OnnxTarget | None = None,
    rounding: RoundingOptions | None = None,
) -> dict[str, Any]:
    """Static PTQ after onnxruntime's ``quant_pre_process``; with ``rounding``, AdaRound re-rounds the INT8
    weights layer by layer (``reconstruction``); then (by default) empirical bias correction on the same
    calibration images (``bias_correction``); the contract is re-embedded. ``depthwise_8bit=False`` reduces
    depthwise weights too (only to compare, see the module docstring)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .bias_correction import correct_biases

    if method not in CALIB_METHODS:
        raise UsageError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    calib, calibration = calibration_tensors(calib_images, contract)
    details: dict[str, Any] = {"scheme": scheme.to_dict(), "calibration": {"method": method, **calibration}}
    with _pre_processed(fp32_path) as pre:
        quantized = pre.with_name("int8.onnx")
        float_model = onnx.load(pre)
        overrides = depthwise_weight_overrides(float_model, scheme) if depthwise_8bit else {}
        details["depthwise_8bit_weights"] = len(overrides)
        # A BatchNormalization's scale is 1-D, so its channel axis is 0; onnxruntime's default of 1 for the op (meant
        # for the activation) made it warn "Axis 1 is out-of-range" on the standardized head and quantize per tensor.
        options: dict[str, Any] = {"TensorQuantOverrides": overrides,
                                   "QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}}
        if method == "percentile":
            options["CalibPercentile"] = 99.999
        quantize_static(
            str(pre), str(quantized), CalibrationReader(calib, INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=types[scheme.activation_type], weight_type=types[scheme.weight_type],
            reduce_range=scheme.reduce_range, calibrate_method=calibrate,
            extra_options=options,
        )
        model = onnx.load(quantized)
        details["int8_method"] = "adaround" if rounding is not None else "ptq"
        if rounding is not None:
            details["reconstruction"] = reconstruct_weights(float_model, model, calib, INPUT_NAME,
                                                            _weight_range(scheme, overrides), rounding)
        details["bias_correction"] = correct_biases(float_model, model, calib, INPUT_NAME) if bias_correction else None
    _write_quantized(model, out_path, contract, target)
    return details


def _weight_range(scheme: Int8Scheme, overrides: dict[str, list[dict[str, Any]]]):
    """The integer range onnxruntime gave each (float) weight: symmetric INT8, 7 bits where the scheme
    reduces it and no depthwise override keeps all 8."""
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    def qrange(name: str) -> tuple[int, int]:
        reduce = scheme.reduce_range and not any(o.get("reduce_range") is False for o in overrides.get(name, []))
        lo, hi = get_qmin_qmax_for_qType(onnx.TensorProto.INT8, reduce_range=reduce, symmetric=True)
        return int(lo), int(hi)

    return qrange


def _write_quantized(model: onnx.ModelProto, out_path: Path, contract: PreprocessContract, target: OnnxTarget | None) -> None:
    """Both engines: no build-machine paths in the file, the contract re-embedded, the target runtime's IR
    version, written atomically."""
    strip_debug_metadata(model)
    embed_contract(model, contract)
    if target is not None:
        apply_target(model, target)
    data = model.SerializeToString()
    atomic_write_bytes(out_path, lambda fh: fh.write(data))


def quantize_onnx_nncf(fp32_path: Path, out_path: Path, contract: PreprocessContract, calib_images: Sequence[Path],
                       scheme: Int8Scheme, accuracy=None, target: OnnxTarget | None = None) -> dict[str, Any]:
    """NNCF on the pre-processed ONNX model (see ``nncf_int8``); the result is a QDQ model for onnxruntime."""
    from .nncf_int8 import float_compute_nodes_onnx, nncf_method, nncf_quantize

    calib, calibration = calibration_tensors(calib_images, contract)
    with _pre_processed(fp32_path) as pre:
        model = nncf_quantize(onnx.load(pre), calib, scheme, accuracy)
    _write_quantized(model, out_path, contract, target)
    details: dict[str, Any] = {"engine": "nncf", "int8_method": nncf_method(accuracy), "scheme": scheme.to_dict(),
                               "calibration": calibration}
    if accuracy is not None:
        details["accuracy_control"] = accuracy.report(float_compute_nodes_onnx(model))
    return details


def build_onnx_int8(ctx: BuildContext) -> dict[str, Any]:
    require_calibration(["onnx-int8"], ctx.calib_images or None)
    scheme = choose_scheme(ctx.target_cpu)
    out = ctx.staging / "model.int8.onnx"
    ctx.log(f"quantizing to INT8 with {ctx.int8_engine} for {scheme.target_cpu} ({scheme.activation_type}/"
            f"{scheme.weight_type}, 7-bit GEMM weights={scheme.reduce_range}) on {len(ctx.calib_images)} calibration images"
            + (f", accuracy control: ≤ {ctx.accuracy.max_drop_pp} points" if ctx.accuracy and ctx.int8_engine == "nncf" else "")
            + (", AdaRound" + (f" within {ctx.int8_time_budget:g} s" if ctx.int8_time_budget else "")
               if ctx.int8_engine == "onnxruntime" and ctx.int8_method == "adaround" else "")
            + (", then bias correction" if ctx.int8_engine == "onnxruntime" and ctx.bias_correction else "")
            + " …")
    if ctx.int8_engine == "nncf":
        details = quantize_onnx_nncf(ctx.fp32_onnx, out, ctx.contract, ctx.calib_images, scheme, ctx.accuracy, ctx.onnx_target)
    else:
        rounding = RoundingOptions(seconds=ctx.int8_time_budget) if ctx.int8_method == "adaround" else None
        details = quantize_onnx(ctx.fp32_onnx, out, ctx.contract, ctx.calib_images, scheme, ctx.calib_method or "minmax",
                                bias_correction=ctx.bias_correction, target=ctx.onnx_target, rounding=rounding)
        details["engine"] = "onnxruntime"
    details.update(check_really_quantized(out, ctx.fp32_onnx))
    return details


register_format("onnx-int8", build_onnx_int8, needs_calibration=True)
