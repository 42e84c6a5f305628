"""What the studies share: the figure sets' data location, a run's cached row, the per-bundle arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, hymenoptera_dir

__all__ = ["REPO", "bundle_parser", "cached_row", "hymenoptera_dir"]


def cached_row(path: Path, settings: dict[str, Any], within: str | None = None) -> dict[str, Any] | None:
    """The row a study cached at ``path`` (None if there is none), if it was run with ``settings``, which it keeps
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
