"""``export_bundle``: checkpoint → verified formats → gates → bundle (atomic) + report (always)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from edgeport.runtime.backends import FEATURES_OUTPUT
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.confidence import MahalanobisStats
from edgeport.runtime.errors import UsageError, exit_code_for
from edgeport.runtime.machine import cpu_info, library_versions
from edgeport.runtime.manifest import (
    LABELS_NAME,
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    OOD_STATS_NAME,
    file_entries,
    write_json,
)
from edgeport.runtime.signing import device_key_ignored
from edgeport.trainer.loading import load_model

from .checks.evalset import load_eval_set
from .checks.evaluate import compare_with_fp32, evaluate_formats
from .checks.gates import apply_gates, raise_on_failed_gates
from .checks.verify import verify_parity
from .conformance import write_conformance_kit
from .formats import BuildContext, parse_formats, require_calibration
from .formats.calibration import select_calibration_images
from .formats.int8_scheme import INT8_ENGINES, INT8_METHODS
from .formats.nncf_int8 import AccuracyTarget
from .formats.onnx_fp32 import INPUT_NAME, OUTPUT_NAME, export_onnx
from .formats.onnx_target import resolve_target
from .samples import packaged_photos
from .signing import BundleSigner
from .staging import staging_bundle

__all__ = ["ExportOptions", "export_bundle", "REPORT_SCHEMA_VERSION"]

REPORT_SCHEMA_VERSION = 1
_LIBRARIES = ("edgeport", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "numpy", "pillow")


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``edge-export`` takes besides SOURCE and --out (typed, NNCF-style keywords)."""

    formats: str = "onnx"
    calib_dir: str | Path | None = None
    calib_size: int = 100
    calib_method: str | None = None  # onnxruntime engine only (minmax when None)
    bias_correction: bool = True  # onnxruntime engine only (see export.bias_correction)
    target_cpu: str = "host"
    int8_engine: str = "onnxruntime"  # quantizer of onnx-int8: onnxruntime or nncf (see export.nncf_int8)
    int8_method: str = "ptq"  # onnxruntime engine: ptq (nearest rounding) or adaround (formats.reconstruction)
    int8_time_budget: float | None = None  # seconds AdaRound may spend (None: every layer)
    eval_dir: str | Path | None = None
    max_drop: float | None = None  # top-1 points below PyTorch a format may lose
    require_speedup: bool = False
    weights: str | None = None
    report: str | Path | None = None  # JSON report path, written even when the export fails
    target_runtime: str | None = None  # "onnxruntime==X.Y" the ONNX files must load in (None: the declared floor)
    sign_key: str | Path | None = None  # EC private key (PEM): sign the bundle, last step of the atomic build
    sign_cert: str | Path | None = None  # with sign_key: the certificate method (signing certificate, PEM)
    sign_cert_chain: tuple[str | Path, ...] = ()  # intermediate/CA certificates carried in the signature

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.eval_dir is None:
            raise UsageError("--max-drop needs --eval DIR: the images to measure the drop on")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError("--max-drop is in top-1 points and must be ≥ 0")
        if self.int8_engine not in INT8_ENGINES:
            raise UsageError(f"--int8-engine must be one of {', '.join(INT8_ENGINES)}, got {self.int8_engine!r}")
        if self.calib_method is not None and self.int8_engine != "onnxruntime":
            raise UsageError("--calib-method chooses onnxruntime's calibrator: use it with --int8-engine onnxruntime")
        if self.int8_method not in INT8_METHODS:
            raise UsageError(f"--int8-method must be one of {', '.join(INT8_METHODS)}, got {self.int8_method!r}")
        if self.int8_method != "ptq" and self.int8_engine != "onnxruntime":
            raise UsageError(f"--int8-method {self.int8_method} re-rounds onnxruntime's weights: use it with --int8-engine onnxruntime")
        if self.int8_time_budget is not None and (self.int8_time_budget <= 0 or self.int8_method != "adaround"):
            raise UsageError("--int8-time-budget is the seconds AdaRound may spend: a positive number, with --int8-method adaround")
        if not self.bias_correction and self.int8_engine != "onnxruntime":
            raise UsageError("--no-bias-correction applies to --int8-engine onnxruntime (NNCF always corrects biases)")


def _git_commit(folder: Path) -> str | None:
    """HEAD of the git checkout holding ``folder``, if any (provenance for release builds)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _report_reduced_precision(name: str, precision: str, result: dict[str, Any], log: Callable[[str], None]) -> None:
    log(f"{name}: top-1 agreement with FP32 {result['top1_agreement_vs_fp32']:.2%} on {result['images']} images, "
        f"latency {result['latency_ms_p50']:.2f} ms vs FP32 {result['fp32_latency_ms_p50']:.2f} ms "
        f"(×{result['latency_ratio_vs_fp32']:.2f})")
    if precision == "int8" and result["latency_ratio_vs_fp32"] >= 1.0:
        log(f"WARNING: {name} is NOT faster than FP32 ONNX on this CPU; ship FP32 or build for the device's CPU (--target-cpu)")


def _report_formats(manifest: dict[str, Any]) -> dict[str, Any]:
    """Per format: size, sha256, measured figures and gate results, for the report."""
    rows = {}
    evaluation = (manifest.get("evaluation") or {}).get("formats", {})
    for name, entry in manifest["formats"].items():
        files = [manifest["files"][f] for f in entry["files"]]
        rows[name] = {
            "file": entry["file"], "precision": entry["precision"], "backend": entry["backend"],
            "bytes": sum(f["bytes"] for f in files), "sha256": manifest["files"][entry["file"]]["sha256"],
            **evaluation.get(name, {}),
            "verification": manifest["verification"].get(name),
            "gates": manifest["gates"].get(name),
            **({"accuracy_control": entry["accuracy_control"]} if "accuracy_control" in entry else {}),
            **({"int8_method": entry["int8_method"]} if "int8_method" in entry else {}),
        }
    return rows


def export_bundle(
    source: str, out_dir: str | Path, options: ExportOptions | None = None, log: Callable[[str], None] = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Export ``source`` (a ``best.pt`` or ``torchvision:<name>``) to ``out_dir``; returns the manifest.

    FP32 ONNX is always built first and verified against PyTorch; the other formats derive from it.
    Any failure (``VerificationError``, ``AccuracyGateError``, ``SpeedGateError`` …) leaves the
    previous bundle at ``out_dir`` untouched; the report, if asked for, is written either way.
    """
    started = time.time()
    report: dict[str, Any] = {"schema_version": REPORT_SCHEMA_VERSION, "source": source, "out": str(out_dir),
                              "bundle_written": False, "formats": {}}
    opts: ExportOptions | None = None
    try:
        opts = replace(options or ExportOptions(), **overrides)
        report["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
        with device_key_ignored():  # the export's own checks load unsigned staging files
            manifest = _export(source, Path(out_dir), opts, log, report)
        report["bundle_written"] = True
        report.update(status="passed", exit_code=0, failure=None)
        return manifest
    except BaseException as exc:
        kind, code = exit_code_for(exc)
        report.update(status="failed", exit_code=code, failure={"kind": kind, "message": str(exc)})
        raise
    finally:
        report_path = opts.report if opts else overrides.get("report")
        if report_path:
            report.update(started_at=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
                          seconds=round(time.time() - started, 1))
            Path(report_path).parent.mkdir(parents=True, exist_ok=True)
            write_json(Path(report_path), report)


def _export(source: str, out_dir: Path, opts: ExportOptions, log: Callable[[str], None], report: dict[str, Any]) -> dict[str, Any]:
    chosen = parse_formats(opts.formats)
    require_calibration([f.name for f in chosen], opts.calib_dir)
    needs_calib = any(f.needs_calibration for f in chosen)
    calib = select_calibration_images(Path(opts.calib_dir), opts.calib_size) if needs_calib else []
    onnx_target = resolve_target(opts.target_runtime)
    if (opts.sign_cert or opts.sign_cert_chain) and not opts.sign_key:
        raise UsageError("--sign-cert/--sign-cert-chain need --sign-key (the certificate's private key)")
    # A bad key fails now, not after the export.
    signer = BundleSigner(opts.sign_key, opts.sign_cert, opts.sign_cert_chain) if opts.sign_key else None
    src = load_model(source, weights=opts.weights)
    # Verify on the checkpoint's own validation images when they are still on disk, else packaged photos.
    verify_images = src.val_files or packaged_photos()
    eval_set = load_eval_set(Path(opts.eval_dir), src.contract) if opts.eval_dir else None
    log(f"exporting {source} ({len(src.contract.labels)} classes, input {src.contract.input_size}) to ONNX …")
    with staging_bundle(out_dir) as staging:
        model_path = staging / "model.onnx"
        proto = export_onnx(src.export_module(), src.contract, model_path, onnx_target, features=src.exports_features)
        _write_ood_stats(staging, src, log)
        log(f"verifying against PyTorch on {len(verify_images)} real images …")
        verification = {"onnx": verify_parity(src.model, model_path, verify_images).to_dict()}
        ctx = BuildContext(staging=staging, fp32_onnx=model_path, contract=src.contract, calib_images=calib,
                           calib_method=opts.calib_method, bias_correction=opts.bias_correction,
                           target_cpu=opts.target_cpu, int8_engine=opts.int8_engine,
                           int8_method=opts.int8_method, int8_time_budget=opts.int8_time_budget,
                           accuracy=_accuracy_target(model_path, eval_set, opts.max_drop), onnx_target=onnx_target, log=log)
        format_entries: dict[str, Any] = {}
        for fmt in chosen:
            details = fmt.build(ctx)
            if fmt.precision == "fp32" and fmt.name not in verification:
                log(f"verifying {fmt.name} against PyTorch …")
                verification[fmt.name] = verify_parity(src.model, staging / fmt.file, verify_images).to_dict()
            elif fmt.precision != "fp32":
                verification[fmt.name] = compare_with_fp32(model_path, staging / fmt.file, verify_images)
                _report_reduced_precision(fmt.name, fmt.precision, verification[fmt.name], log)
            format_entries[fmt.name] = {"file": fmt.file, "files": fmt.files, "backend": fmt.backend,
                                        "precision": fmt.precision, **details}
        opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        format_entries["onnx"].update({"opset": opset, "ir_version": proto.ir_version, "input": INPUT_NAME, "output": OUTPUT_NAME,
                                       **({"features_output": FEATURES_OUTPUT} if src.exports_features else {})})
        (staging / LABELS_NAME).write_text("\n".join(src.contract.labels) + "\n", encoding="utf-8")
        conformance = write_conformance_kit(staging, format_entries, verify_images, verification, log)
        manifest: dict[str, Any] = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "name": src.name,
            "contract": src.contract.to_dict(),
            "formats": format_entries,
            "files": file_entries(staging),
            "source": {**src.provenance, "project_git_commit": _git_commit(Path.cwd()),
                       "edgeport_git_commit": _git_commit(Path(__file__).resolve().parent)},
            "verification": verification,
            "versions": library_versions(_LIBRARIES),
            "cpu": cpu_info(),
            "int8_target_cpu": opts.target_cpu if needs_calib else None,
            "onnx_target": onnx_target.to_dict(),
            "conformance": conformance,
        }
        # The manifest is complete enough for the runtime to open every format by now.
        write_json(staging / MANIFEST_NAME, manifest)
        if eval_set is not None:
            log(f"evaluating {', '.join(format_entries)} against PyTorch on {len(eval_set.paths)} images of {opts.eval_dir} …")
            manifest["evaluation"] = evaluate_formats(src.model, staging, list(format_entries), eval_set)
            report["torch"] = manifest["evaluation"]["torch"]
            report["eval"] = {k: manifest["evaluation"][k] for k in ("images", "labelled", "skipped")}
        manifest["gates"] = apply_gates(manifest.get("evaluation"), format_entries, verification,
                                        opts.max_drop, opts.require_speedup)
        write_json(staging / MANIFEST_NAME, manifest)
        report["formats"] = _report_formats(manifest)
        raise_on_failed_gates(manifest, opts.max_drop)
        if signer is not None:  # last: the signature covers every file, the final manifest included
            log(f"signing the bundle with {signer.key} …")
            signer.sign(staging)
            report["signed"] = True
    onnx_check = verification["onnx"]
    log(
        f"ok: {', '.join(format_entries)}; ONNX vs PyTorch on {onnx_check['images']} images: top-1 agreement "
        f"{onnx_check['top1_agreement']:.2%}, max |Δlogit| {onnx_check['max_abs_logit_diff']:.2e} → {out_dir}"
    )
    return manifest


def _write_ood_stats(staging: Path, src: Any, log: Callable[[str], None]) -> None:
    """The checkpoint's Mahalanobis class centres as the bundle's ``ood_stats.npy``, when its "unknown" score reads
    them (the whitening is in the graph: ``LoadedModel.export_module``)."""
    if not src.exports_features:
        return
    if src.ood_stats is None:
        raise UsageError(f"{src.spec}: its contract's unknown score ({src.contract.ood.score}) needs statistics the "
                         "checkpoint does not hold; re-run edge-train (or edge-train --unknown-score energy)")
    stats = MahalanobisStats.from_array(np.ascontiguousarray(src.ood_stats, np.float32), src.contract.num_classes)
    np.save(staging / OOD_STATS_NAME, stats.whitened().to_array(), allow_pickle=False)
    rule = src.contract.ood
    log(f"unknown: {rule.score} score, threshold {rule.threshold:.4g}; {OOD_STATS_NAME} "
        f"({(staging / OOD_STATS_NAME).stat().st_size / 1e3:.0f} kB), whitened features as a second output of every format")


def _accuracy_target(fp32_onnx: Path, eval_set, max_drop: float | None) -> AccuracyTarget | None:
    """With --eval and --max-drop the INT8 quantizers aim at the gate's own budget (accuracy control)."""
    if eval_set is None or max_drop is None:
        return None
    labelled = eval_set.targets is not None
    targets = eval_set.targets if labelled else Classifier(fp32_onnx, unknown=False).logits_from_tensor(eval_set.tensors).argmax(1)
    return AccuracyTarget(eval_set.tensors, np.asarray(targets), labelled, max_drop)
