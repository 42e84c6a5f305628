"""onnx-int8: a QDQ ONNX model for onnxruntime, quantized by onnxruntime's static post-training
quantization (default: per-channel weights, ``--calib-method``) or by NNCF (``--int8-engine nncf``,
see ``nncf_int8`` for why it is not the default), with the activation/weight types chosen for the
CPU that will run the model.

Why a CPU-aware choice: without VNNI (AVX2 and plain AVX-512 CPUs) onnxruntime's U8S8 kernels
multiply-accumulate in 16 bits and can saturate; the onnxruntime docs advise ``reduce_range`` (7-bit
weights) or U8U8 there. With VNNI, and on ARM with dot-product instructions, U8S8 is both exact and
fastest. Only the GEMM kernels (stem and pointwise convolutions, the classifier) saturate:
onnxruntime's depthwise kernel accumulates in 32 bits (``tests/test_int8.py`` proves both on real
``QLinearConv`` sessions), so depthwise weights keep all 8 bits. ``python -m benchmarks.int8_schemes
BUNDLE`` (top-1 agreement with FP32 on the 296 hymenoptera photos calibration did not use, with bias
correction): ImageNet MobileNetV2 91.55% with 7-bit depthwise weights, 93.58% with 8-bit ones, at the
same speed; U8U8 (8 bits everywhere) also 93.58%, but at ×0.83–1.02 of FP32's latency against
×0.64–0.71 (three runs over both benchmark bundles, same architecture).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.cpu import cpu_info
from edgeport.runtime.errors import VerificationError
from edgeport.runtime.inputs import iter_image_files
from edgeport.runtime.preprocess import preprocess_files
from edgeport.trainer.atomic import atomic_write_bytes
from tqdm.auto import tqdm

from .formats import BuildContext, Format, register_format
from .onnx import INPUT_NAME, embed_contract, strip_debug_metadata

__all__ = ["Int8Scheme", "TARGET_CPUS", "CALIB_METHODS", "INT8_ENGINES", "choose_scheme", "select_calibration_images",
           "quantize_onnx", "quantized_op_counts", "check_really_quantized", "calibration_tensors",
           "conv_group", "depthwise_weight_overrides"]

TARGET_CPUS = ("host", "avx2", "avx512", "vnni", "arm64")
CALIB_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime engine only
INT8_ENGINES = ("onnxruntime", "nncf")
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass(frozen=True)
class Int8Scheme:
    target_cpu: str
    activation_type: str
    weight_type: str
    reduce_range: bool  # 7-bit weights (NNCF: overflow_fix)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host_target(cpu: dict[str, Any]) -> str:
    flags = set(cpu.get("flags", []))
    if str(cpu.get("machine", "")).lower() in ("aarch64", "arm64"):
        return "arm64"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def choose_scheme(target_cpu: str = "host", cpu: dict[str, Any] | None = None) -> Int8Scheme:
    """The QDQ types for ``target_cpu`` (``host`` = the CPU running the export)."""
    if target_cpu not in TARGET_CPUS:
        raise ValueError(f"--target-cpu must be one of {', '.join(TARGET_CPUS)}, got {target_cpu!r}")
    target = _host_target(cpu or cpu_info()) if target_cpu == "host" else target_cpu
    if target in ("vnni", "arm64"):
        return Int8Scheme(target, "uint8", "int8", False, f"{target}: U8S8 accumulates exactly in 32 bits")
    return Int8Scheme(
        target, "uint8", "int8", True,
        f"{target} without VNNI: U8S8 saturates the 16-bit accumulation of GEMM kernels, so their weights use 7 bits "
        "(reduce_range)",
    )


def select_calibration_images(folder: Path, size: int) -> list[Path]:
    """``size`` images spread evenly over the sorted folder (every class represented, same set every run)."""
    files = iter_image_files(folder)
    if not files:
        raise ValueError(f"--calib {folder} holds no images; pass a folder of representative images (e.g. your train set)")
    if len(files) <= size:
        return files
    idx = np.linspace(0, len(files) - 1, size).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


def calibration_tensors(images: Sequence[Path], contract: PreprocessContract) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibration images through the runtime's preprocessing, for every INT8 quantizer, and the
    manifest's ``calibration`` entry (images used, undecodable ones with their reason)."""
    tensors, kept, skipped = preprocess_files(images, contract)
    if not kept:
        raise VerificationError("no calibration image could be decoded; pass a folder of real images to --calib")
    return tensors, {"images": len(kept), "skipped": skipped}


@contextmanager
def _pre_processed(fp32_path: Path) -> Iterator[Path]:
    """onnxruntime's ``quant_pre_process`` (shape inference, graph clean-up) of the FP32 model, in a
    temporary folder: what both ONNX quantizers start from."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgeport-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        yield pre


class _ArrayReader:
    """onnxruntime's calibration reader over images already through the *runtime's* preprocessing
    (what the device will see), one per batch like the device, with a progress bar."""

    def __init__(self, tensors: np.ndarray):
        self.tensors, self.index = tensors, 0
        self.bar = tqdm(total=len(tensors), desc="calibrating", leave=False)

    def get_next(self):
        if self.index >= len(self.tensors):
            self.bar.close()
            return None
        self.index += 1
        self.bar.update(1)
        return {INPUT_NAME: self.tensors[self.index - 1 : self.index]}

    def rewind(self) -> None:
        self.index = 0


def conv_group(node: onnx.NodeProto) -> int:
    """A Conv node's ``group`` attribute (1 when absent); > 1 marks grouped/depthwise convolutions."""
    return next((attr.i for attr in node.attribute if attr.name == "group"), 1)


def depthwise_weight_overrides(model: onnx.ModelProto, scheme: Int8Scheme) -> dict[str, list[dict[str, Any]]]:
    """onnxruntime's ``TensorQuantOverrides`` giving depthwise convolution weights all 8 bits where
    the scheme reduces the rest (see the module docstring); empty where nothing is reduced."""
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


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    contract: PreprocessContract,
    calib_images: Sequence[Path],
    scheme: Int8Scheme,
    method: str = "minmax",
    bias_correction: bool = True,
    depthwise_8bit: bool = True,
) -> dict[str, Any]:
    """Static PTQ after onnxruntime's ``quant_pre_process``, then (by default) empirical bias
    correction on the same calibration images (``bias_correction``); the contract is re-embedded.
    ``depthwise_8bit=False`` reduces depthwise weights too (only to compare, see the module docstring)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .bias_correction import correct_biases

    if method not in CALIB_METHODS:
        raise ValueError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
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
        options: dict[str, Any] = {"TensorQuantOverrides": overrides}
        if method == "percentile":
            options["CalibPercentile"] = 99.999
        quantize_static(
            str(pre), str(quantized), _ArrayReader(calib),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=types[scheme.activation_type], weight_type=types[scheme.weight_type],
            reduce_range=scheme.reduce_range, calibrate_method=calibrate,
            extra_options=options,
        )
        model = onnx.load(quantized)
        details["bias_correction"] = correct_biases(float_model, model, calib, INPUT_NAME) if bias_correction else None
    _write_quantized(model, out_path, contract)
    return details


def _write_quantized(model: onnx.ModelProto, out_path: Path, contract: PreprocessContract) -> None:
    """Both engines: no build-machine paths in the file, the contract re-embedded, written atomically."""
    strip_debug_metadata(model)
    embed_contract(model, contract)
    data = model.SerializeToString()
    atomic_write_bytes(out_path, lambda fh: fh.write(data))


def quantize_onnx_nncf(fp32_path: Path, out_path: Path, contract: PreprocessContract, calib_images: Sequence[Path],
                       scheme: Int8Scheme, accuracy=None) -> dict[str, Any]:
    """NNCF on the pre-processed ONNX model (see ``nncf_int8``); the result is a QDQ model for onnxruntime."""
    from .nncf_int8 import float_compute_nodes_onnx, nncf_quantize

    calib, calibration = calibration_tensors(calib_images, contract)
    with _pre_processed(fp32_path) as pre:
        model = nncf_quantize(onnx.load(pre), calib, scheme, accuracy)
    _write_quantized(model, out_path, contract)
    details: dict[str, Any] = {"engine": "nncf", "scheme": scheme.to_dict(), "calibration": calibration}
    if accuracy is not None:
        details["accuracy_control"] = accuracy.report(float_compute_nodes_onnx(model))
    return details


def build_onnx_int8(ctx: BuildContext) -> dict[str, Any]:
    if not ctx.calib_images:
        raise ValueError("onnx-int8 needs --calib DIR: a folder of representative images (e.g. your train set)")
    scheme = choose_scheme(ctx.target_cpu)
    out = ctx.staging / "model.int8.onnx"
    ctx.log(f"quantizing to INT8 with {ctx.int8_engine} for {scheme.target_cpu} ({scheme.activation_type}/"
            f"{scheme.weight_type}, 7-bit GEMM weights={scheme.reduce_range}) on {len(ctx.calib_images)} calibration images"
            + (f", accuracy control: ≤ {ctx.accuracy.max_drop_pp} points" if ctx.accuracy and ctx.int8_engine == "nncf" else "")
            + (", then bias correction" if ctx.int8_engine == "onnxruntime" and ctx.bias_correction else "")
            + " …")
    if ctx.int8_engine == "nncf":
        details = quantize_onnx_nncf(ctx.fp32_onnx, out, ctx.contract, ctx.calib_images, scheme, ctx.accuracy)
    else:
        details = quantize_onnx(ctx.fp32_onnx, out, ctx.contract, ctx.calib_images, scheme, ctx.calib_method or "minmax",
                                bias_correction=ctx.bias_correction)
        details["engine"] = "onnxruntime"
    details.update(check_really_quantized(out, ctx.fp32_onnx))
    return details


register_format(Format("onnx-int8", 1, "model.int8.onnx", "onnxruntime", "int8", build_onnx_int8, needs_calibration=True))
