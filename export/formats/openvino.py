"""OpenVINO IR from the verified ONNX model (``openvino.convert_model``), the contract in ``rt_info``."""

from __future__ import annotations

from typing import Any

from edgeport.runtime.backends import OPENVINO_RT_PATH
from edgeport.runtime.errors import MissingDependencyError

from .registry import BuildContext, register_format, require_calibration

__all__ = ["build_openvino"]


def _canonical_names(model, onnx_names: set[str]) -> None:
    """Rename the nodes OpenVINO/NNCF invented (``Reshape_249745``: a per-process counter) by their
    topological position, so that the same model exported twice in one process gives the same IR."""
    for index, op in enumerate(model.get_ordered_ops()):
        if op.get_type_name() in ("Parameter", "Result") or op.get_friendly_name() in onnx_names:
            continue
        op.set_friendly_name(f"{op.get_type_name()}_{index}")


def _save(model, ctx: BuildContext, rel: str, compress_to_fp16: bool) -> None:
    import onnx
    import openvino as ov

    graph = onnx.load(ctx.fp32_onnx, load_external_data=False).graph
    _canonical_names(model, {n.name for n in graph.node} | {t.name for t in graph.initializer})
    model.set_rt_info(ctx.contract.to_json(), OPENVINO_RT_PATH)
    path = ctx.staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=compress_to_fp16)


def build_openvino(ctx: BuildContext) -> dict[str, Any]:
    """FP32 IR: weights stay FP32 so the IR computes what the verified ONNX model computes."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingDependencyError("the openvino format needs OpenVINO: pip install 'edgeport[openvino]'") from exc
    model = ov.convert_model(str(ctx.fp32_onnx))
    _save(model, ctx, "openvino/model.xml", compress_to_fp16=False)
    return {"converter": "openvino.convert_model", "compress_to_fp16": False}


register_format("openvino", build_openvino)


def build_openvino_fp16(ctx: BuildContext) -> dict[str, Any]:
    """FP16-compressed weights (half the file; the CPU plugin decompresses them to FP32 at load), so
    it is compared with FP32 ONNX like an INT8 format instead of being held to FP32's 1e-4 tolerance."""
    import openvino as ov

    _save(ov.convert_model(str(ctx.fp32_onnx)), ctx, "openvino-fp16/model.xml", compress_to_fp16=True)
    return {"converter": "openvino.convert_model", "compress_to_fp16": True}


register_format("openvino-fp16", build_openvino_fp16)


def build_openvino_int8(ctx: BuildContext) -> dict[str, Any]:
    """NNCF post-training quantization of the IR (``nncf_int8``); calibration through the runtime's
    preprocessing; with ``--max-drop``, NNCF's accuracy control keeps sensitive operations in float."""
    require_calibration(["openvino-int8"], ctx.calib_images or None)
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise MissingDependencyError("the openvino-int8 format needs NNCF: pip install 'edgeport[openvino]'") from exc
    from .calibration import calibration_tensors
    from .int8_scheme import choose_scheme
    from .nncf_int8 import float_compute_nodes_openvino, nncf_method, nncf_quantize

    calib, calibration = calibration_tensors(ctx.calib_images, ctx.contract)
    scheme = choose_scheme(ctx.target_cpu)
    ctx.log(f"quantizing the OpenVINO IR with NNCF on {calibration['images']} calibration images"
            + (f", accuracy control: ≤ {ctx.accuracy.max_drop_pp} points" if ctx.accuracy else "") + " …")
    quantized = nncf_quantize(ov.convert_model(str(ctx.fp32_onnx)), calib, scheme, ctx.accuracy)
    details: dict[str, Any] = {"quantizer": f"nncf {nncf.__version__}", "int8_method": nncf_method(ctx.accuracy),
                               "scheme": scheme.to_dict(),
                               "calibration": calibration}
    _save(quantized, ctx, "openvino-int8/model.xml", compress_to_fp16=False)  # canonical names first
    if ctx.accuracy is not None:
        details["accuracy_control"] = ctx.accuracy.report(float_compute_nodes_openvino(quantized))
    return details


register_format("openvino-int8", build_openvino_int8, needs_calibration=True)
