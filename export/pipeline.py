"""``export_bundle``: checkpoint → verified ONNX → bundle with labels and manifest."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgeport.runtime.bundle import LABELS_NAME, MANIFEST_NAME
from edgeport.runtime.cpu import cpu_info

from . import quantize as _quantize  # noqa: F401  (registers onnx-int8)
from . import openvino as _openvino  # noqa: F401  (registers openvino, openvino-int8; after onnx-int8)
from .bundle import file_entries, staging_bundle, write_json
from .formats import BuildContext, parse_formats
from .measure import compare_with_fp32
from .quantize import select_calibration_images
from .onnx import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
from .sources import load_source
from .verify import verify_parity

__all__ = ["export_bundle", "MANIFEST_SCHEMA_VERSION"]

MANIFEST_SCHEMA_VERSION = 1
_LIBRARIES = ("edgeport", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "openvino", "numpy", "pillow")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _report_int8(name: str, result: dict[str, Any], log: Callable[[str], None]) -> None:
    log(f"{name}: top-1 agreement with FP32 {result['top1_agreement_vs_fp32']:.2%} on {result['images']} images, "
        f"latency {result['latency_ms_p50']:.2f} ms vs FP32 {result['fp32_latency_ms_p50']:.2f} ms "
        f"(×{result['latency_ratio_vs_fp32']:.2f})")
    if result["latency_ratio_vs_fp32"] >= 1.0:
        log(f"WARNING: {name} is NOT faster than FP32 ONNX on this CPU; ship FP32 or build for the device's CPU (--target-cpu)")


def export_bundle(
    source: str,
    out_dir: str | Path,
    *,
    formats: str = "onnx",
    calib_dir: str | Path | None = None,
    calib_size: int = 100,
    calib_method: str = "minmax",
    target_cpu: str = "host",
    weights: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export ``source`` (a ``best.pt`` or ``torchvision:<name>``) to ``out_dir``; returns the manifest.

    ``formats`` names deployment formats (``onnx``, ``openvino`` …); FP32 ONNX is always built first,
    verified against PyTorch, and the others derive from it. Raises ``VerificationError`` (and
    leaves any previous bundle untouched) when a format disagrees with PyTorch.
    """
    out_dir = Path(out_dir)
    chosen = parse_formats(formats)
    needs_calib = [f.name for f in chosen if f.needs_calibration]
    if needs_calib and calib_dir is None:
        raise ValueError(f"{', '.join(needs_calib)} need --calib DIR: a folder of representative images (e.g. your train set)")
    calib = select_calibration_images(Path(calib_dir), calib_size) if needs_calib else []
    src = load_source(source, weights=weights)
    log(f"exporting {source} ({len(src.contract.labels)} classes, input {src.contract.input_size}) to ONNX …")
    with staging_bundle(out_dir) as staging:
        model_path = staging / "model.onnx"
        export_onnx(src.model, src.contract, model_path)
        log(f"verifying against PyTorch on {len(src.verify_images)} real images …")
        verification = {"onnx": verify_parity(src.model, model_path, src.verify_images).to_dict()}
        ctx = BuildContext(staging=staging, fp32_onnx=model_path, contract=src.contract, calib_images=calib,
                           calib_method=calib_method, target_cpu=target_cpu, log=log)
        format_entries: dict[str, Any] = {}
        for fmt in chosen:
            details = fmt.build(ctx)
            if fmt.precision == "fp32" and fmt.name not in verification:
                log(f"verifying {fmt.name} against PyTorch …")
                verification[fmt.name] = verify_parity(src.model, staging / fmt.file, src.verify_images).to_dict()
            elif fmt.precision != "fp32":
                verification[fmt.name] = compare_with_fp32(model_path, staging / fmt.file, src.verify_images)
                _report_int8(fmt.name, verification[fmt.name], log)
            format_entries[fmt.name] = {"file": fmt.file, "files": fmt.files, "backend": fmt.backend,
                                        "precision": fmt.precision, **details}
        format_entries["onnx"].update({"opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME})
        (staging / LABELS_NAME).write_text("\n".join(src.contract.labels) + "\n", encoding="utf-8")
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "name": src.name,
            "contract": src.contract.to_dict(),
            "formats": format_entries,
            "files": file_entries(staging),
            "source": src.provenance,
            "verification": verification,
            "versions": _versions(),
            "cpu": cpu_info(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        }
        write_json(staging / MANIFEST_NAME, manifest)
    onnx_check = verification["onnx"]
    log(
        f"ok: {', '.join(format_entries)}; ONNX vs PyTorch on {onnx_check['images']} images: top-1 agreement "
        f"{onnx_check['top1_agreement']:.2%}, max |Δlogit| {onnx_check['max_abs_logit_diff']:.2e} → {out_dir}"
    )
    return manifest
