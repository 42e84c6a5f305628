"""Image folders → labelled, decodable train/val file lists, with a report of what was skipped."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from edgeport.runtime.errors import DataError, ImageDecodeError
from edgeport.runtime.inputs import IMAGE_SUFFIXES
from edgeport.runtime.preprocess import load_image
from torch.utils.data import DataLoader, Dataset

from .scan import usable_images
from .transforms import eval_to_input, eval_transform

if TYPE_CHECKING:
    from edgeport.runtime.contract import PreprocessContract

    from .decode_cache import DecodeCache

__all__ = ["Sample", "LabelFunc", "DataSplit", "HEAVY_IMBALANCE_RATIO", "scan_image_folder", "parse_label_from",
           "regex_label_func", "ImageListDataset", "eval_dataset", "collate_with_failures", "RecordingLoader"]

Sample = tuple[Path, int]


@dataclass
class DataSplit:
    """Classes (sorted folder names), the two file lists, and every file that was left out."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def counts(self, samples: list[Sample]) -> dict[str, int]:
        return {c: sum(1 for _, y in samples if y == i) for i, c in enumerate(self.classes)}

    def report(self) -> dict:
        return {
            "root": str(self.root),
            "classes": self.classes,
            "train_counts": self.counts(self.train),
            "val_counts": self.counts(self.val),
            "skipped": self.skipped,
            "imbalance_warning": self.imbalance_warning(),
        }

    def imbalance_warning(self) -> str | None:
        """A warning when the largest train class has ≥ HEAVY_IMBALANCE_RATIO × the images of the smallest."""
        counts = self.counts(self.train)
        largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
        if counts[largest] < HEAVY_IMBALANCE_RATIO * max(counts[smallest], 1):
            return None
        return (f"heavy class imbalance: {largest!r} has {counts[largest]} train images, {smallest!r} only "
                f"{counts[smallest]} (≥ {HEAVY_IMBALANCE_RATIO:g}:1); accuracy will flatter the model — "
                f"add images of the rare classes, or train with --balance weights (or sampler), and read the "
                f"per-class recall")

    def class_table(self) -> str:
        """Train/val images per class, for the start of a run."""
        train, val = self.counts(self.train), self.counts(self.val)
        width = max(len("class"), *(len(c) for c in self.classes))
        rows = [f"{'class':<{width}}  {'train':>6}  {'val':>6}"]
        rows += [f"{c:<{width}}  {train[c]:>6}  {val[c]:>6}" for c in self.classes]
        rows.append(f"{'total':<{width}}  {len(self.train):>6}  {len(self.val):>6}")
        warning = self.imbalance_warning()
        return "\n".join(rows + ([f"WARNING: {warning}"] if warning else []))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(class_dir: Path, skipped: list[dict[str, str]], scan: str = "header") -> list[Path]:
    """Usable images of one class folder (``scan.check_images``); everything else goes to ``skipped`` with the reason."""
    candidates = []
    for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"path": str(path), "reason": f"not an image file suffix ({path.suffix or 'none'})"})
            continue
        candidates.append(path)
    return usable_images(candidates, scan, skipped)


#: A ``label_func`` maps an image path to its class name; ``None`` leaves the file out (reported).
LabelFunc = Callable[[Path], "str | None"]

#: Largest/smallest train class size at which we warn. At 10:1, always answering the big class already
#: scores ≥ 91% accuracy in a two-class problem, so accuracy stops telling whether the rare class is learnt.
HEAVY_IMBALANCE_RATIO = 10.0


def regex_label_func(pattern: str) -> LabelFunc:
    """Label by the first capture group of ``pattern`` searched in the file name (Oxford-Pets style)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"--label-from regex {pattern!r} does not compile: {exc}") from exc
    if compiled.groups < 1:
        raise DataError(f"--label-from regex {pattern!r} needs a capture group, e.g. '^([A-Za-z_]+)_\\d+'")

    def label(path: Path) -> str | None:
        match = compiled.search(path.name)
        return match.group(1) if match and match.group(1) else None

    label.description = f"file name does not match --label-from regex {pattern!r}"  # type: ignore[attr-defined]
    return label


def parse_label_from(spec: str) -> LabelFunc | None:
    """``folder`` → None (labels are the class folders), ``regex:PATTERN`` → a regex label function."""
    if spec == "folder":
        return None
    if spec.startswith("regex:"):
        return regex_label_func(spec[len("regex:"):])
    raise DataError(f"--label-from must be 'folder' or 'regex:PATTERN', got {spec!r}")


def scan_image_folder(root: str | Path, valid_pct: float = 0.2, seed: int = 0, label_from: str = "folder",
                      label_func: LabelFunc | None = None, scan: str = "header") -> DataSplit:
    """Labelled, decodable train/val lists from ``root/{train,val}/…`` or ``root/…`` split by ``valid_pct``.

    Labels come from the class folder (``label_from="folder"``), from ``regex:PATTERN`` on the file
    name, or from ``label_func(path)`` (the Python hook; return ``None`` to leave a file out). Files
    left out are listed in ``skipped`` with the reason, never dropped silently. ``scan``: ``header``
    checks files cheaply (see ``scan.py``), ``full`` decodes each one.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    label_func = label_func or parse_label_from(label_from)
    skipped: list[dict[str, str]] = []
    if (root / "train").is_dir() and (root / "val").is_dir():
        if label_func is None:
            classes = [d.name for d in _class_dirs(root / "train")]
            _check_classes(root / "train", classes)
            unknown = sorted({d.name for d in _class_dirs(root / "val")} - set(classes))
            train = _labelled(root / "train", classes, skipped, require_all=True, scan=scan)
            val = _labelled(root / "val", classes, skipped, require_all=False, scan=scan)
        else:
            train_groups = _group_by_label(root / "train", label_func, skipped, scan)
            val_groups = _group_by_label(root / "val", label_func, skipped, scan)
            classes = sorted(train_groups)
            _check_classes(root / "train", classes)
            unknown = sorted(set(val_groups) - set(classes))
            train = [(p, i) for i, c in enumerate(classes) for p in train_groups[c]]
            val = [(p, i) for i, c in enumerate(classes) for p in val_groups.get(c, [])]
        if unknown:
            raise DataError(f"{root / 'val'} has classes {unknown} that {root / 'train'} lacks; rename or remove them")
    else:
        if not 0.0 < valid_pct < 1.0:
            raise DataError(f"--valid-pct must be between 0 and 1, got {valid_pct}")
        if label_func is None:
            classes = [d.name for d in _class_dirs(root)]
            _check_classes(root, classes)
            groups = {name: _collect(root / name, skipped, scan) for name in classes}
            for name, files in groups.items():
                if not files:
                    raise DataError(f"class folder {root / name} has no decodable images; add images or remove the folder")
        else:
            groups = _group_by_label(root, label_func, skipped, scan)
            classes = sorted(groups)
            _check_classes(root, classes)
        train, val = _stratified_split(groups, classes, valid_pct, seed)
    if not val:
        raise DataError(f"no validation images under {root}; add a val/ folder or raise --valid-pct")
    return DataSplit(root, classes, train, val, skipped)


def _group_by_label(folder: Path, label_func: LabelFunc, skipped: list[dict[str, str]],
                    scan: str = "header") -> dict[str, list[Path]]:
    """Every decodable image under ``folder`` (recursively), grouped by ``label_func``."""
    reason = getattr(label_func, "description", "label_func returned no label")
    groups: dict[str, list[Path]] = {}
    for path in _collect(folder, skipped, scan):
        label = label_func(path)
        if not label:
            skipped.append({"path": str(path), "reason": reason})
            continue
        groups.setdefault(str(label), []).append(path)
    return groups


def _stratified_split(groups: dict[str, list[Path]], classes: list[str], valid_pct: float,
                      seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per class, ``valid_pct`` of the files to val (at least one when the class has two or more)."""
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label, name in enumerate(classes):
        files = sorted(groups[name])
        rng.shuffle(files)  # files are sorted first, so the same seed gives the same split
        n_val = max(1, round(len(files) * valid_pct)) if len(files) > 1 else 0
        val += [(p, label) for p in sorted(files[:n_val])]
        train += [(p, label) for p in sorted(files[n_val:])]
    return train, val


def _check_classes(folder: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise DataError(
            f"{folder} has {len(classes)} class folder(s) {classes}; a classifier needs at least 2 "
            "(one sub-folder of images per class)"
        )


def _labelled(folder: Path, classes: list[str], skipped: list[dict[str, str]], require_all: bool,
              scan: str = "header") -> list[Sample]:
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue
        files = _collect(folder / name, skipped, scan)
        if not files and require_all:
            raise DataError(f"class folder {folder / name} has no decodable images; add images or remove the folder")
        samples += [(p, label) for p in files]
    return samples


class ImageListDataset(Dataset):
    """(path, label) pairs decoded with the runtime's own loader, so train and device decode alike.

    The scan does not decode every file, so a corrupt one can surface here, in a loader worker. It
    never stops the epoch: items are ``(tensor, label, failures)`` where ``failures`` lists the
    ``(path, reason)`` that failed. With ``substitute`` (training) the next decodable sample takes
    the bad one's place, so every batch keeps its size (all DDP ranks step together; BatchNorm needs
    more than one image); without it (validation) the item is a blank image with label -1, dropped
    from the metrics.
    """

    #: Consecutive undecodable files before the loader gives up (the data is broken, not a file).
    MAX_CONSECUTIVE_FAILURES = 16

    def __init__(self, samples: list[Sample], transform: Callable, substitute: bool = False,
                 blank: torch.Tensor | None = None, images: Callable[[Path], Any] = load_image):
        self.samples = samples
        self.transform = transform
        self.images = images  # path → what ``transform`` takes: ``load_image``, or a ``DecodeCache`` method
        self.substitute = substitute
        self.blank = blank

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, list[tuple[str, str]]]:
        failures: list[tuple[str, str]] = []
        for step in range(self.MAX_CONSECUTIVE_FAILURES if self.substitute else 1):
            path, label = self.samples[(index + step) % len(self.samples)]
            try:
                return self.transform(self.images(path)), label, failures
            except ImageDecodeError as exc:
                failures.append((str(path), exc.reason))
        if not self.substitute and self.blank is not None:
            return self.blank, -1, failures
        raise DataError(f"{len(failures)} images in a row failed to decode, the last {failures[-1][0]}: "
                        f"{failures[-1][1]}; check the data folder (disk, encoding) before training")


def eval_dataset(samples: list[Sample], contract: PreprocessContract, cache: DecodeCache | None = None) -> ImageListDataset:
    """``samples`` as the contract evaluates them (every eval pass: validation, the probe, the refit, calibration), their
    eval crops from ``cache`` when the run has one; a file that fails to decode gives a blank image labelled -1."""
    blank = torch.zeros(3, *contract.input_size)
    if cache is None:
        return ImageListDataset(samples, eval_transform(contract), blank=blank)
    return ImageListDataset(samples, eval_to_input(contract), blank=blank, images=cache.eval_image)


def collate_with_failures(items: list[tuple[torch.Tensor, int, list[tuple[str, str]]]]):
    """``(x, y, failures)`` batches from ``ImageListDataset`` items."""
    x = torch.stack([item[0] for item in items])
    y = torch.tensor([item[1] for item in items], dtype=torch.long)
    return x, y, [failure for item in items for failure in item[2]]


class RecordingLoader:
    """A DataLoader of ``collate_with_failures`` batches that yields ``(x, y)`` and keeps the failures.

    ``failures`` maps each file that failed to decode (in any worker) to the reason, for the data report.
    """

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.failures: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)  # generator, sampler, dataset, batch_size

    def __iter__(self):
        for x, y, failures in self.loader:
            self.failures.update(failures)
            yield x, y
