"""``edge-train DATA --init-from RUN/best.pt --new-frames REVIEWED``: continue a deployed model with the frames
labelled on the box's review page (docs/service.md, "The loop").

Honest splits: DATA is split exactly as for the deployed run (same seed, same ``train/``/``val/`` folders), so its
val is the val the deployed model was measured on. The new frames (``REVIEWED/<class>/…``; dot folders such as
``.unknown`` are skipped) are split per class by the same seed: ``valid_pct`` of them to a val share of their own,
the rest to train. Validation during the run covers both; the run prints accuracy on each part before training
(the deployed weights) and after (the best epoch), and metrics.json keeps the numbers under ``init_from``.

The deployed weights are the start: the body continues from them; a recipe whose head-only epoch is the linear
probe fits the head again on the body's features (closed form), as in any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from edgeport.runtime.errors import DataError, UsageError
from torch import nn

from .checkpoint import load_checkpoint
from .data import DataSplit, Sample, _class_dirs, _collect, _stratified_split

__all__ = ["add_new_frames", "load_init_weights", "parts_accuracy", "describe_parts"]


def add_new_frames(split: DataSplit, new_dir: str | Path, valid_pct: float, seed: int, scan: str = "header") -> DataSplit:
    """``split`` with the reviewed frames added: per class ``valid_pct`` to val (after the old val), the rest to train."""
    new_dir = Path(new_dir)
    if not new_dir.is_dir():
        raise DataError(f"--new-frames {new_dir} does not exist; give the review page's dataset folder (DIR/<class>/…)")
    folders = _class_dirs(new_dir)
    unknown = sorted(d.name for d in folders if d.name not in split.classes)
    if unknown:
        raise DataError(f"--new-frames {new_dir} has classes {unknown} that the data and the model do not have "
                        f"({', '.join(split.classes)}); a new class needs a fresh run without --init-from")
    skipped: list[dict[str, str]] = []
    groups = {c: [] for c in split.classes} | {d.name: _collect(d, skipped, scan) for d in folders}
    train, val = _stratified_split(groups, split.classes, valid_pct, seed)  # the folder split's rule, per class
    if not train and not val:
        raise DataError(f"--new-frames {new_dir} has no images in its class folders; label some frames first")
    return DataSplit(split.root, split.classes, split.train + train, split.val + val, split.skipped + skipped)


def load_init_weights(model: nn.Module, path: str | Path, arch: str, classes: list[str], head: str) -> dict[str, Any]:
    """Load ``path``'s weights into ``model`` (built for ``arch``, ``classes`` and ``head``); the checkpoint's facts."""
    checkpoint = load_checkpoint(path)
    if checkpoint["arch"] != arch:
        raise UsageError(f"--init-from {path} is a {checkpoint['arch']}; train with --arch {checkpoint['arch']}")
    labels = list(checkpoint["contract"].labels)
    if labels != list(classes):
        raise UsageError(f"--init-from {path} was trained on classes {labels}, the data has {list(classes)}; pass the "
                         "deployed model's DATA (a new class needs a fresh run)")
    if checkpoint.get("head", "linear") != head:
        raise UsageError(f"--init-from {path} has a {checkpoint.get('head', 'linear')!r} head, this recipe builds "
                         f"{head!r}; use the deployed run's --recipe")
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def parts_accuracy(evaluation: dict[str, torch.Tensor], decoded: torch.Tensor | None, val: list[Sample],
                   new_dir: str | Path) -> dict[str, dict[str, float | int]]:
    """Accuracy on the old val and on the new frames' val share, from one evaluation of the whole val in order."""
    root = Path(new_dir).resolve()
    is_new = torch.tensor([Path(p).resolve().is_relative_to(root) for p, _ in val], dtype=torch.bool)
    if decoded is not None:
        is_new = is_new[decoded]
    right = evaluation["preds"] == evaluation["targets"]
    out = {}
    for name, mask in (("old_val", ~is_new), ("new_val", is_new)):
        total = int(mask.sum())
        correct = int(right[mask].sum())
        out[name] = {"correct": correct, "total": total, "accuracy": correct / total if total else float("nan")}
    return out


def describe_parts(when: str, parts: dict[str, dict[str, float | int]]) -> str:
    def one(name: str, label: str) -> str:
        p = parts[name]
        return f"{label} {p['accuracy']:.4f} ({p['correct']}/{p['total']})" if p["total"] else f"{label} – (no images)"

    return f"--init-from, {when}: {one('old_val', 'old val')}, {one('new_val', 'new frames val')}"
