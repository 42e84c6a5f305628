"""INT8 methods side by side (issue #29): batch-1 latency of INT8 ONNX files made by different methods and of their
FP32 model, interleaved in one run, so ×FP32 compares like with like even on a loaded machine.

    python -m benchmarks.int8_methods latency FP32.onnx ptq=A.int8.onnx adaround=B.int8.onnx
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from edgeport.export.timing import percentiles_ms, time_interleaved
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.machine import cpu_info


@click.group()
def main() -> None:
    """INT8 methods side by side."""


@main.command()
@click.argument("fp32", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("int8", nargs=-1, required=True)
@click.option("--runs", type=int, default=300, help="timed batch-1 calls per model, interleaved")
def latency(fp32: Path, int8: tuple[str, ...], runs: int) -> None:
    """Batch-1 latency of INT8 ONNX files (NAME=PATH) and their FP32 model, interleaved in one run; ×FP32 per file."""
    models = {"fp32": Classifier(fp32, unknown=False).logits_from_tensor}
    for item in int8:
        name, _, path = item.partition("=")
        if not name or not Path(path).is_file():
            raise click.BadParameter(f"{item!r}: give NAME=PATH to an INT8 .onnx file", param_hint="INT8")
        models[name] = Classifier(Path(path), unknown=False).logits_from_tensor
    one = np.zeros((1, 3, *Classifier(fp32, unknown=False).contract.input_size), np.float32)
    samples = time_interleaved({n: (lambda r=r: r(one)) for n, r in models.items()}, runs=runs, warmup=5)
    base = samples.p50_ms("fp32")
    rows = {n: {**percentiles_ms(samples.seconds[n]), "x_fp32": round(samples.p50_ms(n) / base, 3)} for n in models}
    click.echo(json.dumps({"cpu": cpu_info(), "runs": runs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
