"""What a stream produces: one result per frame, its record in jsonl/csv/table, and a summary."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StreamResult", "UNKNOWN", "to_record", "format_record", "csv_header", "Summary", "OUTPUT_FORMATS"]

#: The label reported when the best score is below ``--threshold``.
UNKNOWN = "unknown"
OUTPUT_FORMATS = ("jsonl", "csv", "table")
_CSV_COLUMNS = ["source", "frame", "timestamp", "ok", "label", "score", "top_k", "latency_ms", "error"]


@dataclass(frozen=True)
class StreamResult:
    """One frame's outcome: ``top`` (label, probability) pairs best first, or ``error``.

    ``label`` is the best label, or ``"unknown"`` when its score is below the stream's threshold.
    ``latency_ms`` covers decode + preprocessing + inference of this frame.
    """

    source: str
    index: int | None = None
    timestamp: float | None = None
    top: tuple[tuple[str, float], ...] = ()
    label: str | None = None
    latency_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def to_record(result: StreamResult) -> dict:
    """The JSON-able record of one result (the jsonl line)."""
    record: dict = {"source": result.source}
    if result.index is not None:
        record["frame"], record["timestamp"] = result.index, result.timestamp
    record["ok"] = result.ok
    if result.ok:
        record["label"] = result.label
        record["top_k"] = [{"label": label, "score": round(score, 6)} for label, score in result.top]
        record["latency_ms"] = round(result.latency_ms or 0.0, 3)
    else:
        record["error"] = result.error
    return record


def csv_header() -> str:
    return ",".join(_CSV_COLUMNS)


def _csv_line(record: dict) -> str:
    row = dict(record)
    if record["ok"]:
        row["score"] = record["top_k"][0]["score"]
        row["top_k"] = ";".join(f"{e['label']}:{e['score']}" for e in record["top_k"])
    buffer = io.StringIO()
    csv.DictWriter(buffer, _CSV_COLUMNS, extrasaction="ignore", lineterminator="").writerow(row)
    return buffer.getvalue()


def _table_lines(record: dict) -> str:
    where = record["source"] + (f" #{record['frame']} @{record['timestamp']:.3f}s" if "frame" in record else "")
    if not record["ok"]:
        return f"{where}  ERROR: {record['error']}"
    lines = [f"{where}  → {record['label']}  ({record['latency_ms']:.1f} ms)"]
    lines += [f"  {entry['score']:7.2%}  {entry['label']}" for entry in record["top_k"]]
    return "\n".join(lines)


def format_record(record: dict, fmt: str) -> str:
    """One record as text in ``fmt`` (``jsonl``, ``csv`` without header, ``table``)."""
    if fmt == "jsonl":
        return json.dumps(record, ensure_ascii=False)
    if fmt == "csv":
        return _csv_line(record)
    return _table_lines(record)


@dataclass
class Summary:
    """Counts and latency statistics of a stream, for the line printed at its end."""

    started: float
    latencies: list[float] = field(default_factory=list)
    failed: int = 0

    def add(self, result: StreamResult) -> None:
        if result.ok:
            self.latencies.append(result.latency_ms or 0.0)
        else:
            self.failed += 1

    def text(self, now: float, interrupted: bool = False) -> str:
        done = len(self.latencies)
        parts = [f"{done} classified, {self.failed} failed"]
        if done:
            mean, p50, p90 = np.mean(self.latencies), *np.percentile(self.latencies, [50, 90])
            parts.append(f"latency mean {mean:.1f} / p50 {p50:.1f} / p90 {p90:.1f} ms")
        elapsed = now - self.started
        parts.append(f"{(done + self.failed) / elapsed:.1f} FPS" if elapsed > 0 else "0.0 FPS")
        return ("interrupted: " if interrupted else "") + ", ".join(parts)
