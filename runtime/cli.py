"""``edge-predict``: classify image files and folders with an exported model, torch-free.

Exit codes: 0 every input classified; 1 some inputs failed (each has an error record, the rest
were still classified); 2 bad usage, including a model that cannot be used.
"""

from __future__ import annotations

import json
import sys
import time

import click
import numpy as np

from .classifier import Classifier, Prediction, softmax
from .errors import EdgeportError, ImageDecodeError
from .inputs import InputItem, expand_inputs

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _record_ok(source: str, pred: Prediction, latency_ms: float) -> dict:
    return {
        "source": source,
        "ok": True,
        "top_k": [{"label": label, "score": round(score, 6)} for label, score in pred.top],
        "latency_ms": round(latency_ms, 3),
    }


def _record_error(source: str, error: str) -> dict:
    return {"source": source, "ok": False, "error": error}


def _emit(record: dict, fmt: str) -> None:
    if fmt == "jsonl":
        click.echo(json.dumps(record, ensure_ascii=False))
    elif record["ok"]:
        click.echo(f"{record['source']}  ({record['latency_ms']:.1f} ms)")
        for entry in record["top_k"]:
            click.echo(f"  {entry['score']:7.2%}  {entry['label']}")
    else:
        click.echo(f"{record['source']}  ERROR: {record['error']}")


def classify_items(clf: Classifier, items: list[InputItem], top_k: int, batch: int):
    """Yield one record per input, in input order; a bad input never stops the others."""
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        tensors, ok_idx, records, t0 = [], [], [None] * len(chunk), time.perf_counter()
        for i, item in enumerate(chunk):
            if item.error:
                records[i] = _record_error(item.source, item.error)
                continue
            try:
                tensors.append(clf.preprocess(item.source))
                ok_idx.append(i)
            except ImageDecodeError as exc:
                records[i] = _record_error(item.source, exc.reason)
        if tensors:
            preds = clf.top_k(softmax(clf.logits_from_tensor(np.stack(tensors))), top_k)
            per_item_ms = (time.perf_counter() - t0) * 1000 / len(tensors)
            for i, pred in zip(ok_idx, preds):
                records[i] = _record_ok(chunk[i].source, pred, per_item_ms)
        yield from records


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True, dir_okay=True))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes per image.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="table", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", show_default=True,
              help="auto: the bundle's first format (FP32 ONNX), or the file's own backend.")
@click.option("--model-format", default=None,
              help="A bundle format by name: onnx, onnx-int8, openvino, openvino-int8 (those the bundle has).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads (default: the backend's).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per inference call.")
def main(model: str, inputs: tuple[str, ...], top_k: int, fmt: str, backend: str, model_format: str | None,
         threads: int | None, batch: int) -> None:
    """Classify INPUTS (image files, folders — recursive, sorted — or '-' for paths on stdin) with
    MODEL (an edge-export bundle directory, an .onnx file or an OpenVINO .xml). Preprocessing and labels come from
    the model itself."""
    try:
        clf = Classifier(model, backend=backend, format=model_format, threads=threads, batch_size=batch)
    except EdgeportError as exc:
        raise click.BadParameter(str(exc), param_hint="MODEL") from exc
    items = expand_inputs(inputs)
    n_ok = n_failed = 0
    latencies: list[float] = []
    for record in classify_items(clf, items, top_k, batch):
        _emit(record, fmt)
        if record["ok"]:
            n_ok += 1
            latencies.append(record["latency_ms"])
        else:
            n_failed += 1
    mean = f", mean {np.mean(latencies):.1f} ms/image" if latencies else ""
    click.echo(f"{n_ok} classified, {n_failed} failed{mean} ({clf.format or clf.model_path.name} on {clf.backend})", err=True)
    sys.exit(EXIT_SOME_FAILED if n_failed else EXIT_OK)


if __name__ == "__main__":
    main()
