"""edge-bench: every deployed format of a model, measured against its PyTorch original on the
same images — size, top-1 (or agreement), max |Δlogit|, interleaved batch-1 latency percentiles,
throughput, preprocessing and end-to-end time, and edge-predict's cold start and peak RSS."""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from edgeport.runtime.bundle import FILE_BACKENDS
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.errors import DataError, ModelLoadError, UsageError
from edgeport.runtime.formats import format_names, parse_format_names
from edgeport.runtime.inputs import iter_image_files
from edgeport.runtime.machine import cpu_info, library_versions
from edgeport.runtime.manifest import MANIFEST_NAME, read_manifest
from tqdm.auto import tqdm

from ..checks.accuracy import accuracy_against
from ..checks.evalset import EvalSet, load_eval_set
from ..timing import percentiles_ms, settle, time_interleaved
from .coldstart import measure_edge_predict
from .reference import TorchReference, find_reference, reference_spec
from .report import BENCH_SCHEMA_VERSION

__all__ = ["BenchOptions", "run_benchmark", "BENCH_SCHEMA_VERSION", "TORCH"]

TORCH = "torch"  # the PyTorch eager FP32 original, a row like the formats
_LIBRARIES = ("edgeport", "torch", "torchvision", "onnxruntime", "openvino", "nncf", "numpy", "pillow")


@dataclass(frozen=True)
class BenchOptions:
    """Everything edge-bench takes besides MODEL and --data."""

    formats: str | None = None  # comma-separated, "torch" included; None: torch + every format that exists
    batch: int = 8  # throughput batch
    threads: int | None = None  # None: each backend's default
    runs: int = 50  # at least this many timed batch-1 calls per format ...
    min_seconds: float = 10.0  # ... and at least this long measuring
    max_runs: int = 5000
    warmup: int = 5
    e2e_images: int = 20  # files timed decode → top-k, per format
    cold_starts: int = 3  # edge-predict processes per format (0: skip)
    calib_dir: str | Path | None = None  # INT8 calibration images when MODEL must be exported first
    calib_size: int = 100
    top_k: int = 5
    progress: bool = True
    verify_key: str | Path | None = None  # PEM public key the bundle must be signed by (None: $EDGEPORT_VERIFY_KEY)
    tta: bool = False  # the torch row also reports accuracy with test-time augmentation (never a deployed format)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.runs < 1 or self.warmup < 0 or self.e2e_images < 1 or self.cold_starts < 0:
            raise UsageError("--batch, --runs and --e2e-images must be ≥ 1; --warmup and --cold-starts ≥ 0")


def _parse_names(text: str) -> list[str]:
    """``--formats`` names (torch and the deployment formats); checked before any work."""
    return parse_format_names(text, [TORCH, *format_names()])


def _requested(text: str | None, available: list[str]) -> list[str]:
    """The formats to measure, in the model's order; asking for one the model lacks is an error."""
    if text is None:
        return available
    names = _parse_names(text)
    missing = [n for n in names if n not in available]
    if missing:
        raise ModelLoadError(f"the model has no {', '.join(missing)}; it has {', '.join(available)} (export them with edge-export --formats)")
    return [n for n in available if n in names]


def _prepare_model(model: str, opts: BenchOptions, stack: ExitStack) -> tuple[Path, str | None]:
    """A bundle directory or model file to measure, and the PyTorch source to compare with."""
    path = Path(model)
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise ModelLoadError(f"{path} has no {MANIFEST_NAME}; pass an edge-export bundle, a checkpoint, an .onnx file or torchvision:<name>")
        return path, reference_spec(read_manifest(path))[0]
    if path.suffix in (".onnx", ".xml"):
        return path, None  # a lone model file: its contract is inside; no PyTorch original known
    # A checkpoint or torchvision:<name>: export the requested formats into a temporary bundle first.
    from ..pipeline import export_bundle

    wanted = [n for n in _parse_names(opts.formats) if n != TORCH] if opts.formats else _exportable(opts)
    formats = ",".join(wanted) or "onnx"  # torch alone still needs the contract from an export
    bundle = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-bench-"))) / "bundle"
    export_bundle(model, bundle, formats=formats, calib_dir=opts.calib_dir, calib_size=opts.calib_size, log=lambda _: None)
    return bundle, model


def _exportable(opts: BenchOptions) -> list[str]:
    """Every format, less those that need calibration images when no --calib was given (said once, on stderr)."""
    from ..formats import FORMATS

    skipped = [n for n, f in FORMATS.items() if f.needs_calibration and opts.calib_dir is None]
    if skipped:
        print(f"edge-bench: {', '.join(skipped)} skipped: they need calibration images; add --calib DIR "
              "(e.g. your train set) to measure them too", file=sys.stderr)
    return [n for n in FORMATS if n not in skipped]


def _format_rows(model_path: Path) -> dict[str, dict[str, Any]]:
    """Per deployed format: its files on disk and how it runs (from the manifest, or the lone file)."""
    if model_path.is_file():
        backend = FILE_BACKENDS[model_path.suffix]
        files = [model_path] + ([model_path.with_suffix(".bin")] if model_path.suffix == ".xml" else [])
        name = "onnx" if backend == "onnxruntime" else "openvino"
        return {name: {"file": model_path.name, "files": files, "backend": backend, "precision": "unknown", "open": None,
                       "int8_method": None}}
    formats = read_manifest(model_path)["formats"]
    return {name: {"file": entry["file"], "files": [model_path / f for f in entry.get("files") or [entry["file"]]],
                   "backend": entry.get("backend", "onnxruntime"), "precision": entry.get("precision", "fp32"), "open": name,
                   "int8_method": entry.get("int8_method")}
            for name, entry in formats.items()}


def _batch_of(tensors: np.ndarray, size: int) -> np.ndarray:
    """``size`` real images (repeated when the folder has fewer)."""
    return np.ascontiguousarray(np.resize(tensors, (size, *tensors.shape[1:]))) if len(tensors) < size else tensors[:size]


def _timed(runners: dict[str, Callable[[], object]], opts: BenchOptions, runs: int, what: str,
           block: int = 10) -> dict[str, list[float]]:
    bar = tqdm(total=runs, desc=what, unit="call", disable=not opts.progress, leave=False)
    samples = time_interleaved(runners, runs=runs, warmup=opts.warmup, min_seconds=opts.min_seconds,
                               max_runs=opts.max_runs, on_round=bar.update, block=block)
    bar.close()
    return samples.seconds


def _per_image_ms(clfs: dict[str, Classifier], ref: TorchReference | None, files: list[Path], top_k: int,
                  progress: bool, block: int = 5) -> dict[str, dict[str, float]]:
    """Median preprocessing and decode → top-k ms per image. Formats take turns over blocks of
    ``block`` files, each turn after an untimed settle (``timing.settle``), so every format sees every
    file and none pays for the previous one's spinning threads."""
    steps: dict[str, tuple[Callable[[Path], object], Callable[[Path], object]]] = {
        name: (clf.preprocess, (lambda p, c=clf: c.predict(p, top_k=top_k)))
        for name, clf in clfs.items()}
    if ref is not None:
        steps[TORCH] = (lambda p: ref.preprocess_seconds(p)[1], lambda p: ref.end_to_end_seconds(p, top_k))
    prep: dict[str, list[float]] = {n: [] for n in steps}
    e2e: dict[str, list[float]] = {n: [] for n in steps}
    bar = tqdm(total=len(files), desc="decode → top-k", unit="img", disable=not progress, leave=False)
    for first in range(0, len(files), block):
        chunk = files[first : first + block]
        for name, (prep_step, e2e_step) in steps.items():
            settle(lambda: e2e_step(chunk[0]))
            for path in chunk:
                if name == TORCH:  # the reference times its own steps (torchvision transform, eager model)
                    prep[name].append(prep_step(path))
                    e2e[name].append(e2e_step(path))
                    continue
                start = time.perf_counter()
                prep_step(path)
                prep[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                e2e_step(path)
                e2e[name].append(time.perf_counter() - start)
        bar.update(len(chunk))
    bar.close()
    return {n: {"preprocess_ms_per_image": round(float(np.median(prep[n])) * 1e3, 3),
                "end_to_end_ms_per_image": round(float(np.median(e2e[n])) * 1e3, 3)} for n in prep}


def _fp32_sibling(name: str, rows: dict[str, Any]) -> str | None:
    sibling = name.removesuffix("-int8")
    return sibling if sibling != name and sibling in rows else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def run_benchmark(model: str, data: str | Path, options: BenchOptions | None = None, **overrides: Any) -> dict[str, Any]:
    """Measure MODEL (bundle, model file, checkpoint or ``torchvision:<name>``) on the images of ``data``;
    returns the report documented by ``bench_report.SCHEMA`` (schema_version 1)."""
    from dataclasses import replace

    opts = replace(options or BenchOptions(), **overrides)
    started = time.time()
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"--data {data} is not a folder; pass a folder of images (class sub-folders give top-1)")
    if not iter_image_files(data):  # before any export or model load: a typo'd folder fails fast
        raise DataError(f"--data {data} holds no images; point it at a folder of JPEG/PNG files (class sub-folders give top-1)")
    if opts.formats is not None:
        _parse_names(opts.formats)
    with ExitStack() as stack:
        model_path, spec = _prepare_model(model, opts, stack)
        format_rows = _format_rows(model_path)
        available = ([TORCH] if spec else []) + list(format_rows)
        chosen = _requested(opts.formats, available)
        clfs = {n: Classifier(model_path, format=format_rows[n]["open"], threads=opts.threads, batch_size=opts.batch,
                               verify_key=opts.verify_key) for n in chosen if n != TORCH}
        contract = next(iter(clfs.values())).contract if clfs else None
        ref, torch_status = find_reference(spec, opts.threads) if TORCH in chosen or spec else (None, "no PyTorch source known")
        if contract is None:
            if ref is None:
                raise ModelLoadError(f"nothing to measure: {torch_status}")
            contract = ref.contract
        evalset = load_eval_set(data, contract, option="--data")
        ref_logits = ref.logits(evalset.tensors, opts.batch) if ref is not None else None
        rows: dict[str, dict[str, Any]] = {}
        if ref is not None and TORCH in chosen:
            size = ref.file.stat().st_size if ref.file else None
            rows[TORCH] = {"backend": "torch", "precision": "fp32", "file": ref.spec, "size_bytes": size, "int8_method": None,
                           **accuracy_against(ref_logits, ref_logits, evalset.targets, ref.contract.temperature)}
            if opts.tta:  # beside plain accuracy, in the torch row only: no exported model carries TTA
                tta = ref.tta_logits(evalset.tensors, opts.batch)
                rows[TORCH]["top1_tta"] = accuracy_against(tta, ref_logits, evalset.targets)["top1"]
        for name, clf in tqdm(clfs.items(), desc="accuracy", unit="format", disable=not opts.progress, leave=False):
            info = format_rows[name]
            rows[name] = {"backend": info["backend"], "precision": info["precision"], "file": info["file"],
                          "int8_method": info["int8_method"],
                          "size_bytes": sum(f.stat().st_size for f in info["files"]),
                          **accuracy_against(clf.logits_from_tensor(evalset.tensors), ref_logits, evalset.targets,
                                             clf.contract.temperature)}
        one, many = evalset.tensors[:1], _batch_of(evalset.tensors, opts.batch)
        single = {n: (lambda c=c: c.logits_from_tensor(one)) for n, c in clfs.items()}
        batched = {n: (lambda c=c: c.logits_from_tensor(many)) for n, c in clfs.items()}
        if TORCH in rows:
            single = {TORCH: ref.runner(one), **single}
            batched = {TORCH: ref.runner(many), **batched}
        latency = _timed(single, opts, opts.runs, "batch-1 latency")
        throughput = _timed(batched, replace(opts, min_seconds=opts.min_seconds / 4), max(3, opts.runs // 5), f"batch-{opts.batch} throughput", block=3)
        per_image = _per_image_ms(clfs, ref if TORCH in rows else None, evalset.paths[: opts.e2e_images], opts.top_k, opts.progress)
        for name, row in rows.items():
            row.update(latency_ms={**percentiles_ms(latency[name]), "runs": len(latency[name])},
                       throughput_images_per_s=round(opts.batch / float(np.median(throughput[name])), 2),
                       **per_image[name], edge_predict=None)
        if opts.cold_starts:
            for name in tqdm(list(clfs), desc="edge-predict cold start", unit="format", disable=not opts.progress, leave=False):
                rows[name]["edge_predict"] = measure_edge_predict(model_path, format_rows[name]["open"], evalset.paths[0],
                                                                  opts.cold_starts, opts.threads)
    return _report(model, data, opts, evalset, rows, torch_status if TORCH in chosen or spec else "not requested", started)


def _report(model: str, data: Path, opts: BenchOptions, evalset: EvalSet, rows: dict[str, dict[str, Any]],
            torch_status: str, started: float) -> dict[str, Any]:
    cpu, versions = cpu_info(), library_versions(_LIBRARIES)
    for name, row in rows.items():
        p50 = row["latency_ms"]["p50"]
        row["size_mb"] = round(row["size_bytes"] / 1e6, 3) if row["size_bytes"] is not None else None
        row["latency_ratio_vs_torch"] = _ratio(p50, rows[TORCH]["latency_ms"]["p50"]) if TORCH in rows else None
        sibling = _fp32_sibling(name, rows)
        row["latency_ratio_vs_fp32"] = _ratio(p50, rows[sibling]["latency_ms"]["p50"]) if sibling else None
        row.update(threads=opts.threads, cpu=cpu, versions=versions)
        row.setdefault("top1_tta", None)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "progress"}
    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "model": model,
        "data": str(data),
        "images": len(evalset.paths),
        "labelled": evalset.targets is not None,
        "metric": "top1" if evalset.targets is not None else "agreement_vs_torch",
        "skipped": evalset.skipped,
        "torch_reference": torch_status,
        "settings": settings,
        "machine": {"cpu": cpu, "platform": platform.platform(), "versions": versions},
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "rows": [{"format": name, **row} for name, row in rows.items()],
    }
