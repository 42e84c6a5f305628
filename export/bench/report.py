"""edge-bench's outputs: the JSON schema (and a validator for it), the Markdown table, the PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeport.runtime.manifest import write_json

#: Bumped whenever a field changes meaning or disappears.
BENCH_SCHEMA_VERSION = 2

__all__ = ["BENCH_SCHEMA_VERSION", "SCHEMA", "ROW_SCHEMA", "SchemaError", "validate_report", "markdown_table", "write_report", "write_plot"]

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))

#: Top-level fields of the JSON report (schema_version 2): field → (allowed types, meaning).
SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "schema_version": ((int,), "2; bumped whenever a field changes meaning or disappears (2: drop_vs_torch_pp replaced delta_vs_torch_pp)"),
    "model": ((str,), "MODEL as given: bundle, model file, checkpoint or torchvision:<name>"),
    "data": ((str,), "--data folder"),
    "images": ((int,), "images measured (decodable files under --data)"),
    "labelled": ((bool,), "true when the class sub-folders are named like the model's labels"),
    "metric": ((str,), "'top1' when labelled, else 'agreement_vs_torch'"),
    "skipped": ((list,), "'path: reason' for every undecodable file"),
    "torch_reference": ((str,), "'measured', or why the torch row is missing"),
    "settings": ((dict,), "the options of the run (formats, batch, threads, runs, min_seconds, …)"),
    "machine": ((dict,), "{cpu: {machine, model, flags}, platform, versions}"),
    "started_at": ((str,), "UTC, ISO 8601"),
    "seconds": (_NUM, "wall time of the whole run"),
    "rows": ((list,), "one object per format, torch first, in the bundle's order"),
}

#: Fields of each row.
ROW_SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((str,), "torch, onnx, onnx-int8, openvino, openvino-fp16, openvino-int8"),
    "backend": ((str,), "torch, onnxruntime or openvino"),
    "precision": ((str,), "fp32, fp16 or int8"),
    "int8_method": (_OPT_STR, "INT8 rows: what made the file (the manifest's int8_method: ptq, adaround, nncf-ptq, "
                              "nncf-accuracy-control); null for other rows and bundles older than the field"),
    "file": (_OPT_STR, "model file relative to the bundle (torch: the checkpoint or torchvision:<name>)"),
    "size_bytes": ((int, type(None)), "bytes on disk of every file of the format (null: torchvision weights)"),
    "size_mb": (_OPT_NUM, "size_bytes / 1e6"),
    "top1": (_OPT_NUM, "top-1 accuracy in [0, 1] on labelled data, else null"),
    "top1_tta": (_OPT_NUM, "torch row with --tta on labelled data: top-1 with test-time augmentation (mean softmax of "
                           "the crop and its mirror); null otherwise and for every deployed format"),
    "drop_vs_torch_pp": (_OPT_NUM, "torch's top1 − top1 in points, positive = worse (unlabelled: % of images whose "
                                   "top-1 differs from torch's); the quantity edge-export --max-drop bounds; null without torch"),
    "ece": (_OPT_NUM, "labelled: expected calibration error (15 bins) of the plain softmax, in [0, 1]; null otherwise"),
    "ece_calibrated": (_OPT_NUM, "labelled: the same with the model's fitted temperature applied (what edge-predict "
                                 "reports); null without a temperature or labels"),
    "agreement_vs_torch": (_OPT_NUM, "share of images whose top-1 equals torch's (null without torch)"),
    "max_abs_logit_diff_vs_torch": (_OPT_NUM, "max |logit − torch logit| over all images and classes"),
    "latency_ms": ((dict,), "batch 1, after warm-up, formats interleaved: {p50, p90, p99, runs}"),
    "latency_ratio_vs_torch": (_OPT_NUM, "p50 / torch's p50"),
    "latency_ratio_vs_fp32": (_OPT_NUM, "INT8 rows: p50 / the FP32 sibling's p50 (onnx-int8 / onnx)"),
    "throughput_images_per_s": (_NUM, "batch / median seconds per batch-B call (settings.batch)"),
    "preprocess_ms_per_image": (_NUM, "median decode + resize + crop + normalise, the runtime's own path (its fast JPEG path unless exact; torch: torchvision's eval transform)"),
    "end_to_end_ms_per_image": (_NUM, "median file → top-k, one image at a time"),
    "edge_predict": ((dict, type(None)), "{cold_start_ms, peak_rss_mb, runs}: medians over real edge-predict processes (null: torch / skipped)"),
    "threads": ((int, type(None)), "inference threads asked for (null: the backend's default)"),
    "cpu": ((dict,), "{machine, model, flags}: the CPU model and its ISA flags"),
    "versions": ((dict,), "python and library versions"),
}


class SchemaError(ValueError):
    """A bench report does not match the documented schema."""


def _check(obj: dict[str, Any], schema: dict[str, tuple[tuple[type, ...], str]], where: str) -> None:
    missing = sorted(set(schema) - set(obj))
    extra = sorted(set(obj) - set(schema))
    if missing or extra:
        raise SchemaError(f"{where}: missing fields {missing}, undocumented fields {extra}")
    for key, (types, _) in schema.items():
        value = obj[key]
        # bool is an int in Python; a number field must not silently accept true/false.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise SchemaError(f"{where}.{key} is {type(value).__name__}, expected {'/'.join(t.__name__ for t in types)}")


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``SchemaError`` unless ``report`` has exactly the documented fields and types."""
    _check(report, SCHEMA, "report")
    if report["schema_version"] != BENCH_SCHEMA_VERSION:
        raise SchemaError(f"report.schema_version is {report['schema_version']}, this validator knows {BENCH_SCHEMA_VERSION}")
    for i, row in enumerate(report["rows"]):
        _check(row, ROW_SCHEMA, f"rows[{i}]")
        latency = row["latency_ms"]
        if set(latency) != {"p50", "p90", "p99", "runs"}:
            raise SchemaError(f"rows[{i}].latency_ms has {sorted(latency)}, expected p50, p90, p99, runs")
        if row["edge_predict"] is not None and set(row["edge_predict"]) != {"cold_start_ms", "peak_rss_mb", "runs"}:
            raise SchemaError(f"rows[{i}].edge_predict has {sorted(row['edge_predict'])}")


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Validate against the schema, then write (``runtime.manifest.write_json``: atomic, sorted)."""
    validate_report(report)
    write_json(Path(path), report)


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def markdown_table(report: dict[str, Any]) -> str:
    """The table edge-bench prints: ratios first-class, absolute ms marked machine-specific."""
    head = (f"| format | size MB | top-1 % | drop vs torch pp | agreement % | max abs Δlogit | p50 ms | p90 ms | p99 ms "
            f"| ×torch | ×FP32 | img/s @{report['settings']['batch']} | preprocess ms | end-to-end ms | cold start ms | peak RSS MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"]:
        ep = r["edge_predict"] or {}
        lat = r["latency_ms"]
        lines.append("| " + " | ".join([
            r["format"] + (f" ({r['int8_method']})" if r.get("int8_method") else ""), _fmt(r["size_mb"], ".2f"), _fmt(r["top1"], ".2f", 100), _fmt(r["drop_vs_torch_pp"], ".2f"),
            _fmt(r["agreement_vs_torch"], ".2f", 100), _fmt(r["max_abs_logit_diff_vs_torch"], ".2g"),
            _fmt(lat["p50"], ".2f"), _fmt(lat["p90"], ".2f"), _fmt(lat["p99"], ".2f"),
            _fmt(r["latency_ratio_vs_torch"], ".2f"), _fmt(r["latency_ratio_vs_fp32"], ".2f"),
            _fmt(r["throughput_images_per_s"], ".1f"), _fmt(r["preprocess_ms_per_image"], ".2f"),
            _fmt(r["end_to_end_ms_per_image"], ".2f"), _fmt(ep.get("cold_start_ms"), ".0f"), _fmt(ep.get("peak_rss_mb"), ".0f"),
        ]) + " |")
    tta = [r for r in report["rows"] if r.get("top1_tta") is not None]
    cpu = report["machine"]["cpu"]
    threads = report["settings"]["threads"] or "backend default"
    lines += ["", f"{report['images']} images of {report['data']} ({'labelled' if report['labelled'] else 'unlabelled: agreement with torch'}); "
              f"torch: {report['torch_reference']}; CPU {cpu['model']} ({', '.join(cpu['flags'])}); threads {threads}; "
              f"batch-1 calls per format {report['rows'][0]['latency_ms']['runs'] if report['rows'] else 0}, formats interleaved in settled blocks. "
              "Ratios (×torch, ×FP32) are the comparable figures; absolute ms are specific to this machine and its load."]
    lines += [f"{r['format']} with test-time augmentation (--tta: crop + mirror): top-1 {100 * r['top1_tta']:.2f}% "
              f"(plain {_fmt(r['top1'], '.2f', 100)}%); no deployed format has it." for r in tta]
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Accuracy (or agreement) vs p50 latency per format, and p50 bars with p50–p90 whiskers."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (CI, devices)
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["format"] for r in rows]
    p50 = [r["latency_ms"]["p50"] for r in rows]
    p90 = [r["latency_ms"]["p90"] for r in rows]
    key, label = ("top1", "top-1 accuracy %") if report["labelled"] else ("agreement_vs_torch", "top-1 agreement with torch %")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, x, r in zip(names, p50, rows):
        if r[key] is not None:
            left.scatter(x, r[key] * 100)
            left.annotate(name, (x, r[key] * 100), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set(xlabel="batch-1 latency p50 (ms)", ylabel=label, title="accuracy vs latency")
    left.grid(alpha=0.3)
    right.bar(names, p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90)]], capsize=4, color="tab:blue")
    right.set(ylabel="ms (whisker: p90)", title="batch-1 latency p50")
    right.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{report['model']} — {report['machine']['cpu']['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
