"""What a stream produces: one result per frame, its record in jsonl/csv/table, and a summary.

Every text field (file names, labels, error messages) is untrusted: a file name may hold undecodable
bytes or a newline, a label may hold terminal escape codes. Records keep one line each in every
format and stay valid UTF-8: undecodable bytes become ``\\xNN``; in csv and table output control
characters (and bidi overrides) are escaped too; JSONL is ASCII with JSON's own escapes.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StreamResult", "UNKNOWN", "to_record", "format_record", "csv_header", "Summary", "OUTPUT_FORMATS",
           "LATENCY_SAMPLES", "clean_text", "escape_controls"]

#: The label reported when the best score is below ``--threshold``.
UNKNOWN = "unknown"
OUTPUT_FORMATS = ("jsonl", "csv", "table")
_CSV_COLUMNS = ["source", "frame", "timestamp", "ok", "label", "score", "top_k", "latency_ms", "error"]


@dataclass(frozen=True)
class StreamResult:
    """One frame's outcome: ``top`` (label, probability) pairs best first, or ``error``.

    ``label`` is the best label, or ``"unknown"`` when its score is below the stream's threshold or the model's
    "unknown" rule flags it (``unknown`` True, ``ood_score`` its score; both None for a model without a rule).
    ``latency_ms`` covers decode + preprocessing + inference of this frame.
    """

    source: str
    index: int | None = None
    timestamp: float | None = None
    top: tuple[tuple[str, float], ...] = ()
    label: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    source_id: str | None = None  # the service's source name (several sources in one process)
    unknown: bool | None = None
    ood_score: float | None = None
    region: str | None = None  # the source's named region this result is for (``stream.regions``)

    @property
    def ok(self) -> bool:
        return self.error is None


#: C0/C1 controls (newline, ESC …), line/paragraph separators and bidi overrides/isolates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str) -> str:
    """Valid UTF-8 text: a file name's undecodable bytes (``os.fsdecode``'s lone surrogates) become ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def escape_controls(text: str) -> str:
    """One line, no terminal escapes: control characters as ``\\n``, ``\\x1b``, ``\\u202e`` …"""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def to_record(result: StreamResult) -> dict:
    """The JSON-able record of one result (the jsonl line), every text field valid UTF-8."""
    record: dict = {"source_id": result.source_id} if result.source_id is not None else {}
    record["source"] = clean_text(result.source)
    if result.region is not None:
        record["region"] = result.region
    if result.index is not None:
        record["frame"], record["timestamp"] = result.index, result.timestamp
    record["ok"] = result.ok
    if result.ok:
        record["label"] = clean_text(result.label) if result.label is not None else None
        record["top_k"] = [{"label": clean_text(label), "score": round(score, 6)} for label, score in result.top]
        record["latency_ms"] = round(result.latency_ms or 0.0, 3)
        if result.unknown is not None:
            record["unknown"] = result.unknown
            record["ood_score"] = round(result.ood_score, 6) if result.ood_score is not None else None
    else:
        record["error"] = clean_text(str(result.error))
    return record


def csv_header(with_ids: bool = False, with_regions: bool = False) -> str:
    """The csv header; ``with_ids`` adds the ``source_id`` column (several sources in one process), ``with_regions``
    the ``region`` column (a source with regions)."""
    return ",".join(_CSV_COLUMNS + (["source_id"] if with_ids else []) + (["region"] if with_regions else []))


def _escaped(record: dict) -> dict:
    """The record with every text field escaped to one safe line (csv and table)."""
    out = {k: escape_controls(v) if isinstance(v, str) else v for k, v in record.items()}
    if "top_k" in record:
        out["top_k"] = [{**e, "label": escape_controls(e["label"])} for e in record["top_k"]]
    return out


def _csv_line(record: dict) -> str:
    row = _escaped(record)
    if record["ok"]:
        row["score"] = record["top_k"][0]["score"]
        row["top_k"] = ";".join(f"{e['label']}:{e['score']}" for e in row["top_k"])
    buffer = io.StringIO()  # no newline can be left in a field, so the empty line terminator is safe
    columns = _CSV_COLUMNS + [key for key in ("source_id", "region") if key in record]
    csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="").writerow(row)
    return buffer.getvalue()


def _table_lines(record: dict) -> str:
    record = _escaped(record)
    name = "/".join(str(record[key]) for key in ("source_id", "region") if key in record)
    where = (f"[{name}] " if name else "") + record["source"]
    where += f" #{record['frame']} @{record['timestamp']:.3f}s" if "frame" in record else ""
    if not record["ok"]:
        return f"{where}  ERROR: {record['error']}"
    lines = [f"{where}  → {record['label']}  ({record['latency_ms']:.1f} ms)"]
    lines += [f"  {entry['score']:7.2%}  {entry['label']}" for entry in record["top_k"]]
    return "\n".join(lines)


def format_record(record: dict, fmt: str) -> str:
    """One record as text in ``fmt`` (``jsonl``, ``csv`` without header, ``table``)."""
    if fmt == "jsonl":
        return json.dumps(record, ensure_ascii=True, allow_nan=False)
    if fmt == "csv":
        return _csv_line(record)
    return _table_lines(record)


#: Latencies kept for p50/p90: exact up to this many frames, a uniform random sample of them after
#: (Vitter's reservoir sampling), so a stream of months of frames holds at most this many floats.
LATENCY_SAMPLES = 10_000


@dataclass
class Summary:
    """Counts and latency statistics of a stream, for the line printed at its end, in bounded memory:
    the count and mean are exact, p50/p90 come from a reservoir of ``LATENCY_SAMPLES`` latencies."""

    started: float
    failed: int = 0
    classified: int = 0
    samples: list[float] = field(default_factory=list)
    _total_ms: float = 0.0
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def add(self, result: StreamResult) -> None:
        if not result.ok:
            self.failed += 1
            return
        latency = result.latency_ms or 0.0
        self.classified += 1
        self._total_ms += latency
        if len(self.samples) < LATENCY_SAMPLES:
            self.samples.append(latency)
        elif (slot := self._rng.randrange(self.classified)) < LATENCY_SAMPLES:
            self.samples[slot] = latency

    def text(self, now: float, interrupted: bool = False, stopped: str | None = None) -> str:
        """The summary line; ``stopped`` (e.g. "terminated") prefixes it, as ``interrupted`` does."""
        done = self.classified
        parts = [f"{done} classified, {self.failed} failed"]
        if done:
            p50, p90 = np.percentile(self.samples, [50, 90])
            parts.append(f"latency mean {self._total_ms / done:.1f} / p50 {p50:.1f} / p90 {p90:.1f} ms")
        elapsed = now - self.started
        parts.append(f"{(done + self.failed) / elapsed:.1f} FPS" if elapsed > 0 else "0.0 FPS")
        prefix = f"{stopped}: " if stopped else "interrupted: " if interrupted else ""
        return prefix + ", ".join(parts)
