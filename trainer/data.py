"""Image folders → labelled, decodable train/val file lists, with a report of what was skipped."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from edgeport.runtime.errors import DataError, ImageDecodeError
from edgeport.runtime.inputs import IMAGE_SUFFIXES
from edgeport.runtime.preprocess import load_image
from torch.utils.data import Dataset

__all__ = ["Sample", "DataSplit", "scan_image_folder", "ImageListDataset"]

Sample = tuple[Path, int]


@dataclass
class DataSplit:
    """Classes (sorted folder names), the two file lists, and every file that was left out."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def report(self) -> dict:
        def counts(samples: list[Sample]) -> dict[str, int]:
            return {c: sum(1 for _, y in samples if y == i) for i, c in enumerate(self.classes)}

        return {
            "root": str(self.root),
            "classes": self.classes,
            "train_counts": counts(self.train),
            "val_counts": counts(self.val),
            "skipped": self.skipped,
        }


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(class_dir: Path, skipped: list[dict[str, str]]) -> list[Path]:
    """Decodable images of one class folder; everything else goes to ``skipped`` with the reason."""
    good = []
    for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"path": str(path), "reason": f"not an image file suffix ({path.suffix or 'none'})"})
            continue
        try:
            load_image(path)  # a full decode: truncated or mislabelled files fail here, not mid-epoch
        except ImageDecodeError as exc:
            skipped.append({"path": str(path), "reason": exc.reason})
            continue
        good.append(path)
    return good


def scan_image_folder(root: str | Path, valid_pct: float = 0.2, seed: int = 0) -> DataSplit:
    """``root/{train,val}/<class>/*`` or ``root/<class>/*`` split per class by ``valid_pct`` and ``seed``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    skipped: list[dict[str, str]] = []
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = [d.name for d in _class_dirs(root / "train")]
        _check_classes(root / "train", classes)
        unknown = sorted({d.name for d in _class_dirs(root / "val")} - set(classes))
        if unknown:
            raise DataError(f"{root / 'val'} has class folders {unknown} that {root / 'train'} lacks; rename or remove them")
        train = _labelled(root / "train", classes, skipped, require_all=True)
        val = _labelled(root / "val", classes, skipped, require_all=False)
    else:
        if not 0.0 < valid_pct < 1.0:
            raise DataError(f"--valid-pct must be between 0 and 1, got {valid_pct}")
        classes = [d.name for d in _class_dirs(root)]
        _check_classes(root, classes)
        rng = random.Random(seed)
        train, val = [], []
        for label, name in enumerate(classes):
            files = _collect(root / name, skipped)
            if not files:
                raise DataError(f"class folder {root / name} has no decodable images; add images or remove the folder")
            rng.shuffle(files)  # files are sorted first, so the same seed gives the same split
            n_val = max(1, round(len(files) * valid_pct)) if len(files) > 1 else 0
            val += [(p, label) for p in sorted(files[:n_val])]
            train += [(p, label) for p in sorted(files[n_val:])]
    if not val:
        raise DataError(f"no validation images under {root}; add a val/ folder or raise --valid-pct")
    return DataSplit(root, classes, train, val, skipped)


def _check_classes(folder: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise DataError(
            f"{folder} has {len(classes)} class folder(s) {classes}; a classifier needs at least 2 "
            "(one sub-folder of images per class)"
        )


def _labelled(folder: Path, classes: list[str], skipped: list[dict[str, str]], require_all: bool) -> list[Sample]:
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue
        files = _collect(folder / name, skipped)
        if not files and require_all:
            raise DataError(f"class folder {folder / name} has no decodable images; add images or remove the folder")
        samples += [(p, label) for p in files]
    return samples


class ImageListDataset(Dataset):
    """(path, label) pairs decoded with the runtime's own loader, so train and device decode alike."""

    def __init__(self, samples: list[Sample], transform: Callable):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_image(path)), label
