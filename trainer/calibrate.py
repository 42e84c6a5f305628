"""The end of a run: a temperature for honest probabilities and the statistics of an "unknown" score, fitted on
data the weights never trained on, so they travel with the checkpoint into every exported format.

- **Temperature** (Guo et al. 2017): one scalar ``T`` minimising the validation split's log-loss of ``logits / T``.
  It changes no prediction, only how sure they claim to be.
- **Unknown**: an out-of-distribution score (``runtime.confidence.OOD_SCORES``) and the threshold that keeps
  ``KEEP`` of the correctly classified validation images; below it a record says ``unknown: true``. Mahalanobis'
  class means and shared covariance come from training images (at most ``MAX_STATS_IMAGES``, eval transform), the
  threshold from the validation split, so the threshold is not set on the images the statistics were fitted to.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from edgeport.runtime.cli_support import debug_option, exit_on_error
from edgeport.runtime.confidence import (
    FEATURE_SCORES,
    MahalanobisStats,
    expected_calibration_error,
    ood_score,
    scaled_softmax,
)
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import UsageError
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .choices import DEFAULT_UNKNOWN_SCORE, UNKNOWN_SCORES
from .data import collate_with_failures, eval_dataset, scan_image_folder
from .decode_cache import DecodeCache
from .devices import choose_precision
from .models import build_for_checkpoint, head_entry
from .steps import to_device

__all__ = ["Outputs", "collect_outputs", "stats_subset", "fit_temperature", "Calibration", "calibrate", "KEEP", "MAX_STATS_IMAGES",
           "calibrate_checkpoint"]

#: Share of the correctly classified validation images the "unknown" threshold keeps.
KEEP = 0.95
#: Training images whose features the Mahalanobis statistics are fitted on (a seeded, stratified-by-order subset).
MAX_STATS_IMAGES = 1000


@dataclass
class Outputs:
    """What a model produced for a set of images: pooled features (the head's input), logits, labels (numpy)."""

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def collect_outputs(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool = True,
                    desc: str = "features", failures: dict[str, str] | None = None) -> Outputs:
    """Features, logits and labels of every decodable image of ``loader`` (``collate_with_failures`` batches);
    the files that failed, with the reason, go into ``failures``."""
    captured: list[torch.Tensor] = []
    hook = head_entry(model).register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().float().cpu()))
    feats, logits, labels = [], [], []
    model.eval()
    try:
        for x, y, failed in tqdm(loader, desc=desc, leave=False, disable=not progress):
            if failures is not None:
                failures.update(failed)
            x, y = to_device(x, y, device)
            out = model(x).float().cpu()
            keep = (y >= 0).cpu()  # -1: a file that failed to decode
            feats.append(captured.pop()[keep])
            logits.append(out[keep])
            labels.append(y.cpu()[keep])
    finally:
        hook.remove()
    if not feats:
        return Outputs(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    return Outputs(torch.cat(feats).numpy(), torch.cat(logits).numpy(), torch.cat(labels).numpy())


def stats_subset(samples: list, seed: int) -> list:
    """At most ``MAX_STATS_IMAGES`` of the training samples (a seeded draw, in their original order)."""
    if len(samples) <= MAX_STATS_IMAGES:
        return list(samples)
    keep = sorted(random.Random(seed).sample(range(len(samples)), MAX_STATS_IMAGES))
    return [samples[i] for i in keep]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the log-loss of ``logits / T`` (L-BFGS on log T, so T stays positive)."""
    z, y = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


@dataclass
class Calibration:
    """What ``calibrate`` fitted, and the validation figures that show what it bought."""

    temperature: float
    ece_before: float
    ece_after: float
    ood_score: str | None
    ood_threshold: float | None
    stats: MahalanobisStats | None

    def contract_fields(self) -> dict[str, Any]:
        """The contract's ``temperature`` and ``ood`` fields (``runtime.contract``)."""
        ood = None if self.ood_score is None else {"score": self.ood_score, "threshold": round(self.ood_threshold, 6)}
        return {"temperature": round(self.temperature, 6), "ood": ood}

    def summary(self) -> str:
        parts = [f"temperature {self.temperature:.3f}: validation ECE {self.ece_before:.2%} → {self.ece_after:.2%}"]
        if self.ood_score:
            parts.append(f"unknown: {self.ood_score} score, threshold {self.ood_threshold:.4g} "
                         f"(keeps {KEEP:.0%} of the correctly classified validation images)")
        return "; ".join(parts)


def calibrate(val: Outputs, train: Outputs | None, num_classes: int, score: str | None = DEFAULT_UNKNOWN_SCORE) -> Calibration:
    """Fit the temperature and the unknown threshold on ``val``; Mahalanobis statistics on ``train``'s features.
    ``score=None``: no unknown detection."""
    temperature = fit_temperature(val.logits, val.labels)
    before = expected_calibration_error(scaled_softmax(val.logits, None), val.labels)
    after = expected_calibration_error(scaled_softmax(val.logits, temperature), val.labels)
    stats = None
    if score in FEATURE_SCORES:
        if train is None or not len(train.labels):
            raise ValueError(f"the {score} score needs training images' features")
        stats = MahalanobisStats.fit(train.features, train.labels, num_classes)
    threshold = None
    if score is not None:
        values = ood_score(score, val.logits, temperature, val.features, stats)
        correct = val.logits.argmax(1) == val.labels
        kept = values[correct] if correct.any() else values
        threshold = float(np.quantile(kept, 1.0 - KEEP, method="lower"))
    return Calibration(temperature, before, after, score, threshold, stats)


def calibrate_checkpoint(path: Path, val: list, train: list, score: str | None, device: torch.device, batch_size: int,
                         workers: int, progress: bool, seed: int = 0,
                         cache: DecodeCache | None = None) -> tuple[PreprocessContract, Calibration, float]:
    """Fit the calibration of checkpoint ``path`` on ``val`` (and ``train``'s features for Mahalanobis) and write it
    into the checkpoint: its contract's temperature and "unknown" rule, and the statistics. Returns the new contract,
    the fit and the seconds it took."""
    started = time.perf_counter()
    ckpt = load_checkpoint(path)
    contract: PreprocessContract = ckpt["contract"]
    model = build_for_checkpoint(ckpt["arch"], contract.num_classes, ckpt["state_dict"], ckpt["head"]).to(device)
    if choose_precision(device).channels_last:
        model.to(memory_format=torch.channels_last)

    def outputs(samples: list, desc: str) -> Outputs:
        loader = DataLoader(eval_dataset(samples, contract, cache), batch_size=batch_size, num_workers=workers,
                            collate_fn=collate_with_failures)
        return collect_outputs(model, loader, device, progress, desc)

    val_out = outputs(val, "calibration: validation")
    train_out = outputs(stats_subset(train, seed), "calibration: training features") if score in FEATURE_SCORES else None
    fitted = calibrate(val_out, train_out, contract.num_classes, score)
    contract = replace(contract, **fitted.contract_fields())
    save_checkpoint(path, arch=ckpt["arch"], state_dict=ckpt["state_dict"], contract=contract, epoch=ckpt["epoch"],
                    metrics=ckpt["metrics"], val_files=ckpt["val_files"], head=ckpt["head"],
                    ood_stats=None if fitted.stats is None else fitted.stats.to_array())
    return contract, fitted, time.perf_counter() - started


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--unknown-score", type=click.Choice(UNKNOWN_SCORES), default=DEFAULT_UNKNOWN_SCORE, show_default=True)
@click.option("--valid-pct", type=float, default=0.2, show_default=True, help="The split the run used (no val/ folder).")
@click.option("--seed", type=int, default=0, show_default=True, help="The seed the run used.")
@debug_option
def main(checkpoint: str, data_dir: str, unknown_score: str, valid_pct: float, seed: int, debug: bool) -> None:
    """Calibrate a checkpoint edge-train wrote before runs calibrated themselves, in place: the temperature and the
    "unknown" rule on its own validation images (edge-train does this at the end of every run)."""
    with exit_on_error(debug):
        ckpt = load_checkpoint(checkpoint)
        split = scan_image_folder(data_dir, valid_pct=valid_pct, seed=seed)
        if sorted(str(p) for p, _ in split.val) != sorted(ckpt["val_files"]):
            raise UsageError(f"{data_dir}'s validation split is not the one {checkpoint} was validated on; pass the "
                             "DATA_DIR, --valid-pct and --seed of its edge-train run")
        if split.classes != list(ckpt["contract"].labels):
            raise UsageError(f"{data_dir} has the classes {split.classes}, {checkpoint} {list(ckpt['contract'].labels)}")
        score = None if unknown_score == "none" else unknown_score
        _, fitted, seconds = calibrate_checkpoint(Path(checkpoint), split.val, split.train, score, torch.device("cpu"),
                                                  32, 1, True, seed)
        print(f"{checkpoint}: {fitted.summary()} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
