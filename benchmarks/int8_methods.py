"""INT8 methods side by side (issue #29): one bundle per method from the same source and calibration images, then
agreement with FP32 (and top-1 where the folders are labelled) on each eval folder, and batch-1 latency of every
INT8 file and FP32 ONNX interleaved in one run (so ×FP32 compares like with like on a loaded machine).

    python -m benchmarks.int8_methods compare torchvision:mobilenet_v2 --calib ../shared/data/hymenoptera/train \\
        --eval ../shared/data/hymenoptera/val --out build/benchmarks/int8-methods
    python -m benchmarks.int8_methods latency FP32.onnx ptq=A.int8.onnx adaround=B.int8.onnx   # timing alone

Rows: ``ptq`` (onnxruntime quantize_static + bias correction, the default), ``adaround`` (``--int8-method
adaround``), ``nncf-ptq`` (openvino-int8, NNCF on the IR), and ``adaround-ir`` (the AdaRound QDQ ONNX file
converted by ``openvino.convert_model``: OpenVINO from the same quantized weights).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
from edgeport.export import export_bundle
from edgeport.export.checks.evalset import load_eval_set
from edgeport.export.timing import percentiles_ms, time_interleaved
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.machine import cpu_info

_OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def _ir_logits(onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The QDQ ONNX file through openvino.convert_model, compiled like the runtime compiles an IR."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov.convert_model(str(onnx_path)), "CPU", _OV_CONFIG)
    return lambda x: np.asarray(compiled(x)[0])


def _agreement(logits: np.ndarray, fp32: np.ndarray, targets: np.ndarray | None) -> dict[str, Any]:
    row = {"agreement_vs_fp32": round(float((logits.argmax(1) == fp32.argmax(1)).mean()), 4)}
    if targets is not None:
        row["top1"] = round(float((logits.argmax(1) == targets).mean()), 4)
    return row


@click.group()
def main() -> None:
    """INT8 methods side by side."""


@main.command()
@click.argument("fp32", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("int8", nargs=-1, required=True)
@click.option("--runs", type=int, default=300, help="timed batch-1 calls per model, interleaved")
def latency(fp32: Path, int8: tuple[str, ...], runs: int) -> None:
    """Batch-1 latency of INT8 ONNX files (NAME=PATH) and their FP32 model, interleaved in one run; ×FP32 per file."""
    models = {"fp32": Classifier(fp32).logits_from_tensor}
    for item in int8:
        name, _, path = item.partition("=")
        models[name] = Classifier(Path(path)).logits_from_tensor
    one = np.zeros((1, 3, *Classifier(fp32).contract.input_size), np.float32)
    samples = time_interleaved({n: (lambda r=r: r(one)) for n, r in models.items()}, runs=runs, warmup=5)
    base = samples.p50_ms("fp32")
    rows = {n: {**percentiles_ms(samples.seconds[n]), "x_fp32": round(samples.p50_ms(n) / base, 3)} for n in models}
    click.echo(json.dumps({"cpu": cpu_info(), "runs": runs, "rows": rows}, indent=1))


@main.command()
@click.argument("source")
@click.option("--calib", "calib_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--calib-size", type=int, default=100)
@click.option("--eval", "eval_dirs", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True, required=True)
@click.option("--methods", default="ptq,adaround,nncf-ptq,adaround-ir")
@click.option("--int8-time-budget", type=float, default=None)
@click.option("--runs", type=int, default=200, help="timed batch-1 calls per model, interleaved")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("build/benchmarks/int8-methods"))
def compare(source: str, calib_dir: Path, calib_size: int, eval_dirs: tuple[Path, ...], methods: str,
         int8_time_budget: float | None, runs: int, out: Path) -> None:
    wanted = methods.split(",")
    bundles: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for method in ("ptq", "adaround"):
        if method not in wanted and not (method == "adaround" and "adaround-ir" in wanted) \
                and not (method == "ptq" and "nncf-ptq" in wanted):
            continue
        formats = "onnx,onnx-int8" + (",openvino-int8" if method == "ptq" and "nncf-ptq" in wanted else "")
        started = time.monotonic()
        manifest = export_bundle(source, out / method, formats=formats, calib_dir=calib_dir, calib_size=calib_size,
                                 int8_method=method, log=lambda m: click.echo(m, err=True),
                                 **({"int8_time_budget": int8_time_budget} if method == "adaround" else {}))
        bundles[method] = out / method
        seconds[method] = round(time.monotonic() - started, 1)
        (out / f"{method}.manifest.json").write_text(json.dumps(manifest["formats"], indent=1, default=str))
    base = next(iter(bundles.values()))
    fp32 = Classifier(base, format="onnx")
    models: dict[str, Callable[[np.ndarray], np.ndarray]] = {"fp32": fp32.logits_from_tensor}
    if "ptq" in wanted:
        models["ptq"] = Classifier(bundles["ptq"], format="onnx-int8").logits_from_tensor
    if "adaround" in wanted:
        models["adaround"] = Classifier(bundles["adaround"], format="onnx-int8").logits_from_tensor
    if "nncf-ptq" in wanted:
        models["nncf-ptq"] = Classifier(bundles["ptq"], format="openvino-int8").logits_from_tensor
    if "adaround-ir" in wanted:
        models["adaround-ir"] = _ir_logits(bundles["adaround"] / "model.int8.onnx")
    rows: dict[str, dict[str, Any]] = {name: {} for name in models}
    for folder in eval_dirs:
        evalset = load_eval_set(folder, fp32.contract)
        ref = fp32.logits_from_tensor(evalset.tensors)
        for name, run in models.items():
            logits = np.concatenate([run(evalset.tensors[i : i + 1]) for i in range(len(evalset.tensors))])
            rows[name][str(folder)] = _agreement(logits, ref, evalset.targets)
    one = load_eval_set(eval_dirs[0], fp32.contract).tensors[:1]
    samples = time_interleaved({n: (lambda r=r: r(one)) for n, r in models.items()}, runs=runs, warmup=5)
    fp32_p50 = samples.p50_ms("fp32")
    for name in models:
        p50 = samples.p50_ms(name)
        rows[name].update(latency_ms=percentiles_ms(samples.seconds[name]), x_fp32=round(p50 / fp32_p50, 3))
    for name in ("ptq", "adaround"):
        if name in rows and name in seconds:
            rows[name]["export_seconds"] = seconds[name]
    result = {"source": source, "calib": str(calib_dir), "calib_size": calib_size, "cpu": cpu_info(), "rows": rows,
              "int8_time_budget": int8_time_budget}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    click.echo(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
