"""Calibrated confidence and "unknown" (issue #31), measured on a fine-tuned checkpoint in PyTorch:

- the validation (and test) split's expected calibration error (15 bins) before and after the temperature fitted on
  validation;
- for each out-of-distribution score (``runtime.confidence.OOD_SCORES``), how well it tells the validation photos
  from photos of other sets: AUROC and the false-positive rate at 95% true-positive rate, plus the share of the
  other set's photos the chosen threshold (keeps 95% of the correctly classified validation photos) calls unknown.

``python -m benchmarks.confidence RUN/best.pt DATA --ood OTHER_DIR[,OTHER_DIR…] [--ood samples] [--bundle BUNDLE]``
(DATA: the training folder with train/ and val/, and test/ when it has one). Writes build/confidence/<run>.json.

With ``--bundle`` (that checkpoint exported), the same per deployed format, through the runtime itself: ECE before and
after, the bundle's own unknown rule on each other set, and the milliseconds per frame the rule adds (the features
output and the score), batch 1, interleaved, median of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from edgeport.runtime.confidence import OOD_SCORES, auroc, expected_calibration_error, fpr_at_tpr, ood_score, scaled_softmax
from edgeport.runtime.inputs import IMAGE_SUFFIXES
from edgeport.trainer.calibrate import MAX_STATS_IMAGES, Outputs, calibrate, collect_outputs
from edgeport.trainer.data import ImageListDataset, collate_with_failures, scan_image_folder
from edgeport.trainer.loading import load_model
from torch.utils.data import DataLoader

from .common import REPO


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _outputs(loaded, samples: list[tuple[Path, int]], desc: str) -> Outputs:
    import torch

    dataset = ImageListDataset(samples, loaded.eval_transform(), blank=torch.zeros(3, *loaded.contract.input_size))
    loader = DataLoader(dataset, batch_size=32, num_workers=1, collate_fn=collate_with_failures)
    return collect_outputs(loaded.model, loader, torch.device("cpu"), desc=desc)


def _ece_of_a_calibrated_model(probs: np.ndarray, draws: int = 1000, seed: int = 0) -> list[float]:
    """Median and 90th percentile of the ECE that a perfectly calibrated model with these probabilities would show on
    this many images (labels drawn from its own probabilities): ECE is biased upwards on small sets."""
    rng = np.random.default_rng(seed)
    cumulative = probs.cumsum(1)
    values = []
    for _ in range(draws):
        labels = (rng.random((len(probs), 1)) > cumulative).sum(1).clip(0, probs.shape[1] - 1)
        values.append(expected_calibration_error(probs, labels))
    return [float(np.median(values)), float(np.quantile(values, 0.9))]


def _cross_fitted_ece(out: Outputs, seed: int = 0) -> float:
    """ECE with the temperature fitted on the other half of the images (two folds, seeded), pooled: an out-of-sample
    figure beside the in-sample one."""
    from edgeport.trainer.calibrate import fit_temperature

    order = np.random.default_rng(seed).permutation(len(out.labels))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    probs = np.zeros_like(out.logits)
    for fit, held in (halves, halves[::-1]):
        probs[held] = scaled_softmax(out.logits[held], fit_temperature(out.logits[fit], out.labels[fit]))
    return expected_calibration_error(probs, out.labels)


def _ms_per_frame(clf, tensor: np.ndarray, runs: int) -> dict[str, float]:
    """Batch-1 ms per frame through ``outputs_from_tensor`` with the unknown rule and without it, interleaved."""
    rule = clf.unknown
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(5):
        clf.outputs_from_tensor(tensor)
    for _ in range(runs):
        for key in ("with", "without"):
            clf.unknown = rule if key == "with" else None
            t0 = time.perf_counter()
            clf.outputs_from_tensor(tensor)
            times[key].append((time.perf_counter() - t0) * 1000)
    clf.unknown = rule
    out = {k: float(np.median(v)) for k, v in times.items()}
    out["added_share"] = out["with"] / out["without"] - 1
    return out


def _bundle_rows(bundle: Path, split, test_dir: Path | None, others: dict[str, list[Path]], runs: int) -> dict:
    """Per format of ``bundle``: calibration error, the bundle's unknown rule on the other sets, its cost."""
    from edgeport.runtime.classifier import Classifier
    from edgeport.runtime.manifest import read_manifest

    def tensors(clf, paths: list[Path]) -> np.ndarray:
        return np.stack([clf.preprocess(p) for p in paths])

    sets = {"val": (split.val, None)}
    if test_dir is not None:
        index = {name: i for i, name in enumerate(split.classes)}
        sets["test"] = ([(p, index[p.parent.name]) for p in _images(test_dir)], None)
    rows = {}
    for fmt in read_manifest(bundle)["formats"]:
        clf = Classifier(bundle, format=fmt, threads=2)
        row: dict = {}
        inside = None
        for name, (samples, _) in sets.items():
            x = tensors(clf, [p for p, _ in samples])
            labels = np.array([c for _, c in samples])
            logits = clf.logits_from_tensor(x)
            probs, scores = clf.outputs_from_tensor(x)
            row[name] = {"accuracy": float((logits.argmax(1) == labels).mean()),
                         "ece": expected_calibration_error(scaled_softmax(logits, None), labels),
                         "ece_calibrated": expected_calibration_error(probs, labels)}
            if scores is not None:
                row[name]["unknown"] = float((scores < clf.unknown.threshold).mean())
                inside = scores if name == "val" else inside
        if clf.unknown is not None:
            for name, paths in others.items():
                outside = clf.outputs_from_tensor(tensors(clf, paths))[1]
                row[name] = {"auroc": auroc(inside, outside), "fpr95": fpr_at_tpr(inside, outside),
                             "unknown": float((outside < clf.unknown.threshold).mean())}
            row["ms_per_frame"] = _ms_per_frame(clf, tensors(clf, [split.val[0][0]]), runs)
        rows[fmt] = row
        print(fmt, json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--ood", action="append", default=[], help="a folder of other photos, or 'samples'")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "confidence")
    parser.add_argument("--bundle", type=Path, default=None, help="the checkpoint's edge-export bundle: per-format rows")
    parser.add_argument("--runs", type=int, default=200, help="--bundle: timed batch-1 calls per setting")
    args = parser.parse_args()
    started = time.perf_counter()
    loaded = load_model(args.checkpoint)
    split = scan_image_folder(args.data)
    rng = random.Random(0)
    train = rng.sample(split.train, min(MAX_STATS_IMAGES, len(split.train)))
    val = _outputs(loaded, split.val, "val")
    train_out = _outputs(loaded, train, "train subset")
    test_dir = args.data / "test"
    test = None
    if test_dir.is_dir():
        classes = {name: i for i, name in enumerate(split.classes)}
        test = _outputs(loaded, [(p, classes[p.parent.name]) for p in _images(test_dir)], "test")
    others: dict[str, Outputs] = {}
    other_files: dict[str, list[Path]] = {}
    for spec in [s for item in args.ood for s in item.split(",")]:
        if spec == "samples":
            from edgeport.export.samples import packaged_photos

            files = packaged_photos()
        else:
            files = _images(Path(spec))
        others[spec] = _outputs(loaded, [(p, 0) for p in files], spec)
        other_files[spec] = list(files)
    n = loaded.contract.num_classes
    report: dict = {"checkpoint": str(args.checkpoint), "data": str(args.data), "val_images": len(val.labels),
                    "stats_images": len(train_out.labels), "scores": {}}
    for score in OOD_SCORES:
        fitted = calibrate(val, train_out, n, score)
        inside = ood_score(score, val.logits, fitted.temperature, val.features, fitted.stats)
        row = {"threshold": fitted.ood_threshold, "val_unknown": float((inside < fitted.ood_threshold).mean())}
        for name, other in others.items():
            outside = ood_score(score, other.logits, fitted.temperature, other.features, fitted.stats)
            row[name] = {"images": len(outside), "auroc": auroc(inside, outside), "fpr95": fpr_at_tpr(inside, outside),
                         "unknown": float((outside < fitted.ood_threshold).mean())}
        report["scores"][score] = row
        report["temperature"], report["val_ece"] = fitted.temperature, [fitted.ece_before, fitted.ece_after]
    report["val_ece_cross_fitted"] = _cross_fitted_ece(val)
    report["val_ece_if_calibrated"] = _ece_of_a_calibrated_model(scaled_softmax(val.logits, report["temperature"]))
    if test is not None:
        report["test_ece"] = [expected_calibration_error(scaled_softmax(test.logits, t), test.labels)
                              for t in (None, report["temperature"])]
        report["test_accuracy"] = float((test.logits.argmax(1) == test.labels).mean())
    report["val_accuracy"] = float((val.logits.argmax(1) == val.labels).mean())
    if args.bundle is not None:
        report["bundle"] = _bundle_rows(args.bundle, split, test_dir if test is not None else None, other_files, args.runs)
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.checkpoint.parent.name or "run"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
