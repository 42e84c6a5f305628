"""Transfer learning by strategy (head / finetune / gradual / full), one-cycle LR in each phase.

Every epoch writes ``best.pt`` (when it improves) and ``last.pt`` atomically; ``last.pt`` holds the
optimizer, scheduler and RNG state, so ``resume=True`` continues a killed run exactly.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import UsageError
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import reports
from .augment import train_transforms
from .checkpoint import load_run_state, save_checkpoint, save_run_state
from .data import DataSplit, ImageListDataset, scan_image_folder
from .devices import default_workers, resolve_device, seed_everything, use_amp, use_channels_last
from .lr_find import lr_find, plot_lr_find
from .models import arch_contract, build_pretrained, replace_head
from .steps import evaluate, train_step
from .strategies import STRATEGIES, Phase, plan_phases, set_trainable, train_mode
from .transforms import eval_transform

__all__ = ["TrainConfig", "TrainResult", "fit", "find_lr", "resolve_device"]


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "mobilenet_v2"
    strategy: str = "finetune"  # head | finetune | gradual | full (see strategies.plan_phases)
    epochs: int = 3  # unfrozen epochs, after the head-only ones
    freeze_epochs: int = 1
    lr: float | str = 5e-3  # peak LR of the new head while the body is frozen; "auto": LR finder's valley
    unfrozen_lr_div: float = 10.0  # unfrozen: the head peaks at lr / 10 ...
    lr_mult: float = 100.0  # ... the earliest body group at that / 100, groups between geometrically
    unfreeze: int | None = None  # gradual: body blocks unfrozen from the end (None: all)
    batch_size: int = 16  # small data: more steps per epoch beat bigger batches
    seed: int = 0
    valid_pct: float = 0.2
    device: str = "auto"
    workers: int | None = None  # None: chosen from the CPU count and device
    weights: str | None = None  # a local ImageNet state dict instead of torchvision's file
    lr_find_iters: int = 100
    label_from: str = "folder"  # or 'regex:PATTERN' on the file name
    aug: str = "light"  # augmentation preset: none | light | strong

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.freeze_epochs < 0 or self.epochs + self.freeze_epochs == 0:
            raise UsageError("need at least one epoch: --epochs and --freeze-epochs are ≥ 0 and not both 0")
        if self.lr != "auto" and (isinstance(self.lr, str) or self.lr <= 0):
            raise UsageError(f"--lr must be a number > 0 or 'auto', got {self.lr!r}")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be ≥ 1")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.lr_mult < 1 or self.unfrozen_lr_div <= 0:
            raise UsageError("--lr-mult must be ≥ 1")
        if self.unfreeze is not None and (self.strategy != "gradual" or self.unfreeze < 1):
            raise UsageError("--unfreeze K (K ≥ 1, or 'full') only goes with --strategy gradual")

    def phases(self) -> list[Phase]:
        if self.lr == "auto":
            raise UsageError("resolve --lr auto with the LR finder before planning phases")
        return plan_phases(self.strategy, freeze_epochs=self.freeze_epochs, epochs=self.epochs, lr=float(self.lr),
                           unfrozen_lr_div=self.unfrozen_lr_div, lr_mult=self.lr_mult, unfreeze=self.unfreeze)


@dataclass
class TrainResult:
    best_path: Path
    metrics_path: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    last_path: Path | None = None
    lr_find: dict[str, Any] | None = None


def _loaders(split: DataSplit, contract: PreprocessContract, config: TrainConfig, device: torch.device):
    workers = config.workers if config.workers is not None else default_workers(device)
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(
        ImageListDataset(split.train, train_transforms(contract, config.aug, device)[0]),
        batch_size=config.batch_size, shuffle=True, drop_last=len(split.train) > config.batch_size,
        generator=generator, **common,
    )
    val = DataLoader(ImageListDataset(split.val, eval_transform(contract)), batch_size=config.batch_size, **common)
    return train, val, generator


def _prepare(data_dir: str | Path, out_dir: Path, config: TrainConfig, device: torch.device):
    """Split the data, build the pretrained model with a fresh head, and the loaders."""
    seed_everything(config.seed)
    split = scan_image_folder(data_dir, valid_pct=config.valid_pct, seed=config.seed, label_from=config.label_from)
    tqdm.write(split.class_table())
    for item in split.skipped:
        tqdm.write(f"skipped {item['path']}: {item['reason']}")
    (out_dir / "data_report.json").write_text(json.dumps(split.report(), indent=2))
    (out_dir / "val_files.txt").write_text("".join(f"{p}\n" for p, _ in split.val))  # for edge-predict -
    imagenet = arch_contract(config.arch)
    contract = PreprocessContract(**{**imagenet.to_dict(), "labels": split.classes})
    model = build_pretrained(config.arch, config.weights)
    replace_head(model, len(split.classes))
    model.to(device)
    if use_channels_last(device):
        model.to(memory_format=torch.channels_last)
    return split, contract, model, *_loaders(split, contract, config, device)


def _run_lr_find(model: nn.Module, loader: DataLoader, device: torch.device, out_dir: Path, config: TrainConfig,
                 progress: bool):
    set_trainable(model, Phase("lr_find", 1, 0, 1.0, 1.0))  # like fastai: the finder runs on the frozen model
    shuffle_state = loader.generator.get_state()
    result = lr_find(model, loader, device, num_it=config.lr_find_iters, progress=progress)
    loader.generator.set_state(shuffle_state)  # training then sees the batches it would have seen without it
    plot_lr_find(result, out_dir / "lr_find.png")
    tqdm.write(f"lr_find: valley {result.valley:.2e}  steep {result.steep:.2e}  → {out_dir / 'lr_find.png'}")
    return result


def find_lr(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, progress: bool = True):
    """``edge-train --lr-find``: sweep the LR on the frozen model, write ``lr_find.png``, train nothing."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    _, _, model, train_loader, _, _ = _prepare(data_dir, out_dir, config, device)
    return _run_lr_find(model, train_loader, device, out_dir, config, progress)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_reports(out_dir: Path, split: DataSplit, best_eval: dict[str, torch.Tensor], metrics: dict[str, Any]) -> None:
    """Pictures and per-class metrics of the best epoch's validation pass."""
    targets, preds = best_eval["targets"].numpy(), best_eval["preds"].numpy()
    matrix = reports.confusion_matrix(targets, preds, len(split.classes))
    metrics["per_class"] = reports.per_class_metrics(matrix, split.classes)
    metrics["confusion_matrix"] = matrix.tolist()
    reports.plot_curves(metrics["history"], out_dir / "curves.png")
    reports.plot_confusion(matrix, split.classes, out_dir / "confusion_matrix.png")
    metrics["top_losses"] = reports.plot_top_losses(
        [p for p, _ in split.val], targets, preds, best_eval["losses"].numpy(), best_eval["probs"].numpy(),
        split.classes, out_dir / "top_losses.png")
    reports.write_metrics(out_dir, metrics)
    for name, m in metrics["per_class"].items():
        tqdm.write(f"{name:>16}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  n={m['support']}")


def fit(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, progress: bool = True,
        resume: bool = False) -> TrainResult:
    """Fine-tune ``config.arch`` on an image folder into ``out_dir`` (best.pt, last.pt, metrics, pictures).

    ``resume=True`` continues the run in ``out_dir`` from its ``last.pt`` with that run's own config
    (``config`` is ignored then) and the same optimizer, scheduler and RNG state.
    """
    out_dir = Path(out_dir)
    state = load_run_state(out_dir) if resume else None
    if state is not None:
        config = TrainConfig(**state["config"])
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    split, contract, model, train_loader, val_loader, generator = _prepare(data_dir, out_dir, config, device)
    if state is not None and state["classes"] != split.classes:
        raise UsageError(f"--resume {out_dir}: the run trained on classes {state['classes']}, {data_dir} has "
                         f"{split.classes}; pass the same DATA_DIR")
    found = None
    if config.lr == "auto":
        found = _run_lr_find(model, train_loader, device, out_dir, config, progress).to_dict()
        config = replace(config, lr=found["valley"])

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    best_eval: dict[str, torch.Tensor] = {}
    done = 0
    if state is not None:
        model.load_state_dict(state["model"])
        history, best, best_eval, done = state["history"], state["best"], state["best_eval"], state["epoch"]
        found = state.get("lr_find")
        _set_rng_state(state["rng"], generator)
        tqdm.write(f"resuming {out_dir} after epoch {done} with its saved settings")
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    metrics: dict[str, Any] = {"config": asdict(config), "device": str(device),
                               "data": {k: v for k, v in split.report().items() if k != "skipped"},
                               "skipped": split.skipped, "lr_find": found}
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp(device))
    batch_augment = train_transforms(contract, config.aug, device)[1]  # the GPU half of --aug, or None
    tqdm.write(reports.table_header())
    epoch = 0
    for phase in config.phases():
        phase_start, epoch = epoch, epoch + phase.epochs
        if epoch <= done:
            continue  # finished before the resume
        groups = set_trainable(model, phase)
        optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
        # Small datasets give few steps per phase: a short warm-up from lr/10 keeps the peak's area large.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=phase.epochs * len(train_loader),
            pct_start=0.2, div_factor=10.0,
        )
        if state is not None and phase_start < done:  # killed mid-phase: same optimizer and schedule position
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        for current in range(max(done, phase_start) + 1, epoch + 1):
            start = time.perf_counter()
            train_mode(model)
            loss_sum, seen = 0.0, 0
            bar = tqdm(train_loader, desc=f"epoch {current} ({phase.name})", leave=False, disable=not progress)
            for x, y in bar:
                loss_sum += train_step(model, x, y, optimizer, scaler, device, batch_augment) * len(y)
                seen += len(y)
                scheduler.step()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            evaluation = evaluate(model, val_loader, device)
            accuracy = (evaluation["preds"] == evaluation["targets"]).sum().item() / len(evaluation["targets"])  # exact
            row = {"epoch": current, "phase": phase.name, "train_loss": loss_sum / seen,
                   "val_loss": evaluation["losses"].mean().item(), "val_accuracy": accuracy,
                   "error_rate": 1.0 - accuracy, "seconds": time.perf_counter() - start}
            history.append(row)
            tqdm.write(reports.table_row(row))
            if not best or (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"], -best["val_loss"]):
                best, best_eval = dict(row), evaluation
                save_checkpoint(best_path, arch=config.arch, state_dict=model.state_dict(), contract=contract,
                                epoch=current, metrics=best, val_files=[str(p) for p, _ in split.val])
            save_run_state(last_path, {
                "config": asdict(config), "classes": split.classes, "epoch": current, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(generator), "history": history, "best": best, "best_eval": best_eval,
                "lr_find": metrics["lr_find"],
            })
            reports.write_metrics(out_dir, {**metrics, "best": best, "history": history})
    metrics.update(best=best, history=history)
    _write_reports(out_dir, split, best_eval, metrics)
    return TrainResult(best_path, out_dir / "metrics.json", best, history, last_path, metrics["lr_find"])
