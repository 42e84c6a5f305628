"""What the figure sets and studies share: where the data is, their arguments, writing the results."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from edgeport.export.bench.report import markdown_table, write_plot, write_report

REPO = Path(__file__).resolve().parents[1]
ALL_FORMATS = "onnx,onnx-int8,openvino,openvino-int8"


def hymenoptera_dir() -> Path:
    """The hymenoptera ants/bees photos: $EDGEPORT_HYMENOPTERA, else ../shared/data/hymenoptera beside the repo."""
    path = Path(os.environ.get("EDGEPORT_HYMENOPTERA", REPO.parent / "shared" / "data" / "hymenoptera"))
    if not (path / "train").is_dir() or not (path / "val").is_dir():
        raise SystemExit(f"hymenoptera data not found at {path}; set EDGEPORT_HYMENOPTERA to a folder with train/ and val/")
    return Path(os.path.relpath(path))  # reports and tables name it as the command saw it, not this machine's layout


def cached_row(path: Path, settings: dict[str, Any], within: str | None = None) -> dict[str, Any] | None:
    """The row a benchmark cached at ``path`` (None if there is none), if it was run with ``settings``, which it keeps
    at its top level or under ``within``; compared on the keys it recorded, so rows from before a setting was recorded
    still count. Otherwise a SystemExit naming the file: another run's figures must go to another --out."""
    if not path.exists():
        return None
    row = json.loads(path.read_text())
    recorded = row[within] if within else row
    if differ := {k: recorded[k] for k, v in settings.items() if k in recorded and recorded[k] != v}:
        raise SystemExit(f"{path} was run with {differ}, not {settings}: use another --out")
    return row


def bundle_parser(doc: str, runs: int) -> argparse.ArgumentParser:
    """The arguments every per-bundle study takes: BUNDLE, --threads, --runs (timed calls per runner)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an edge-export bundle folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=runs)
    return parser


def write_results(report: dict[str, Any], out: Path, command: str) -> None:
    """results.md (the table and the command), results.json, plot.png under ``out``; the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(report)
    (out / "results.md").write_text(f"`{command}` — {report['started_at']}, {report['seconds']} s\n\n{table}\n", encoding="utf-8")
    write_report(report, out / "results.json")
    write_plot(report, out / "plot.png")
    print(table)
    print(f"\nwritten: {out / 'results.md'}, {out / 'results.json'}, {out / 'plot.png'}")
