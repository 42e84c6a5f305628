"""What the figure sets share: where the data is, writing the results."""

from __future__ import annotations

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


def write_results(report: dict[str, Any], out: Path, command: str) -> None:
    """results.md (the table and the command), results.json, plot.png under ``out``; the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(report)
    (out / "results.md").write_text(f"`{command}` — {report['started_at']}, {report['seconds']} s\n\n{table}\n", encoding="utf-8")
    write_report(report, out / "results.json")
    write_plot(report, out / "plot.png")
    print(table)
    print(f"\nwritten: {out / 'results.md'}, {out / 'results.json'}, {out / 'plot.png'}")
