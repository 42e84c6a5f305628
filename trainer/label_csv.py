"""Labels from a CSV file (fastai's ``ImageDataLoaders.from_csv``): ``path,label`` rows relative to DATA.

The split is fixed by a ``valid`` column (1/true/yes: validation) or by a second CSV of validation
paths (``--val-csv``); without either, ``valid_pct`` of each class goes to validation as for folders.
"""

from __future__ import annotations

import csv
from pathlib import Path

from edgeport.runtime.errors import DataError
from edgeport.runtime.inputs import IMAGE_SUFFIXES

from .data import DataSplit, Sample, _check_classes, _stratified_split
from .scan import usable_images

__all__ = ["read_rows", "split_from_csv"]

_TRUE, _FALSE = {"1", "true", "yes", "valid", "val"}, {"0", "false", "no", "train", ""}


def read_rows(csv_path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of ``csv_path`` as dicts; its header must name the ``required`` columns."""
    if not csv_path.is_file():
        raise DataError(f"labels file {csv_path} does not exist; give a CSV with a header row 'path,label'")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{csv_path} lacks the column(s) {missing} (found {columns}); its first row must be a "
                            f"header such as '{','.join(required)}'")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _is_valid(value: str, csv_path: Path, line: int) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise DataError(f"{csv_path} line {line}: valid={value!r}; use 1/true for validation, 0/false for training")


def split_from_csv(root: str | Path, labels_csv: str | Path, val_csv: str | Path | None = None, valid_pct: float = 0.2,
                   seed: int = 0, scan: str = "header") -> DataSplit:
    """Train/val lists from ``labels_csv`` (paths relative to ``root``, or absolute), checked like a folder scan."""
    root = Path(root)
    labels_path = _resolve(root, labels_csv)
    rows = read_rows(labels_path, ("path", "label"))
    has_valid = bool(rows) and "valid" in rows[0]
    if has_valid and val_csv is not None:
        raise DataError(f"{labels_path} has a 'valid' column and --val-csv was given too; use one of them")
    skipped: list[dict[str, str]] = []
    listed: dict[Path, tuple[str, bool]] = {}
    for line, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise DataError(f"{labels_path} line {line}: empty path or label; every row needs both")
        path = root / row["path"]
        is_val = _is_valid(row.get("valid", ""), labels_path, line) if has_valid else False
        if path in listed:
            if listed[path][0] != row["label"]:
                raise DataError(f"{labels_path} line {line}: {row['path']} is listed twice with different labels "
                                f"({listed[path][0]!r}, {row['label']!r}); keep one")
            continue
        listed[path] = (row["label"], is_val)
    if val_csv is not None:
        val_path = _resolve(root, val_csv)
        val_rows = read_rows(val_path, ("path",))
        for line, row in enumerate(val_rows, start=2):
            path = root / row["path"]
            label = row.get("label") or (listed[path][0] if path in listed else "")
            if not label:
                raise DataError(f"{val_path} line {line}: {row['path']} has no label there nor in {labels_path}")
            listed[path] = (label, True)
    fixed_split = has_valid or val_csv is not None
    good = _usable(listed, skipped, scan, labels_path)
    train_groups: dict[str, list[Path]] = {}
    val_groups: dict[str, list[Path]] = {}
    for path in good:
        label, is_val = listed[path]
        (val_groups if fixed_split and is_val else train_groups).setdefault(label, []).append(path)
    classes = sorted(train_groups)
    _check_classes(labels_path, classes)
    if fixed_split:
        unknown = sorted(set(val_groups) - set(classes))
        if unknown:
            raise DataError(f"validation rows have labels {unknown} that no training row has; fix the CSV")
        index = {c: i for i, c in enumerate(classes)}
        train: list[Sample] = [(p, index[c]) for c in classes for p in sorted(train_groups[c])]
        val: list[Sample] = [(p, index[c]) for c in classes for p in sorted(val_groups.get(c, []))]
    else:
        if not 0.0 < valid_pct < 1.0:
            raise DataError(f"--valid-pct must be between 0 and 1, got {valid_pct}")
        train, val = _stratified_split(train_groups, classes, valid_pct, seed)
    if not val:
        raise DataError(f"no validation images in {labels_path}; add a 'valid' column, --val-csv, or raise --valid-pct")
    return DataSplit(root, classes, train, val, skipped)


def _resolve(root: Path, csv_path: str | Path) -> Path:
    """A CSV named as given, else inside DATA (``--labels-csv labels.csv`` for DATA/labels.csv, like fastai)."""
    path = Path(csv_path)
    return path if path.is_file() or path.is_absolute() else root / path


def _usable(listed: dict[Path, tuple[str, bool]], skipped: list[dict[str, str]], scan: str, csv_path: Path) -> list[Path]:
    """The listed files that exist and pass the scan; the rest go to ``skipped``."""
    candidates = []
    for path in listed:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"path": str(path), "reason": f"not an image file suffix ({path.suffix or 'none'})"})
        elif not path.is_file():
            skipped.append({"path": str(path), "reason": f"listed in {csv_path.name} but not found; fix the path "
                                                          "(relative to DATA) or remove the row"})
        else:
            candidates.append(path)
    return usable_images(candidates, scan, skipped)
