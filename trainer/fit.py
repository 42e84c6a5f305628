"""Transfer learning: a frozen-body head phase, then an unfrozen phase, one-cycle LR in each."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgeport.runtime.contract import PreprocessContract
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .augment import train_transforms
from .checkpoint import save_checkpoint
from .data import DataSplit, ImageListDataset, scan_image_folder
from .models import arch_contract, build_pretrained, head_module_name, replace_head
from .transforms import eval_transform

__all__ = ["TrainConfig", "TrainResult", "fit", "resolve_device"]


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "mobilenet_v2"
    epochs: int = 3  # unfrozen epochs, after the head-only ones
    freeze_epochs: int = 1
    lr: float = 5e-3  # peak LR of the new head while the body is frozen
    unfrozen_lr_div: float = 10.0  # unfrozen: the head peaks at lr / 10 ...
    body_lr_div: float = 100.0  # ... and the pretrained body at lr / 100 (fastai's slice idea)
    batch_size: int = 16  # small data: more steps per epoch beat bigger batches
    seed: int = 0
    valid_pct: float = 0.2
    device: str = "auto"
    workers: int | None = None  # None: chosen from the CPU count and device
    weights: str | None = None  # a local ImageNet state dict instead of torchvision's file
    label_from: str = "folder"  # or 'regex:PATTERN' on the file name
    aug: str = "light"  # augmentation preset: none | light | strong

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.freeze_epochs < 0 or self.epochs + self.freeze_epochs == 0:
            raise ValueError("need at least one epoch: --epochs and --freeze-epochs are ≥ 0 and not both 0")
        if self.lr <= 0 or self.batch_size < 1:
            raise ValueError("--lr must be > 0 and --batch-size ≥ 1")


@dataclass
class TrainResult:
    best_path: Path
    metrics_path: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    # On a 2-core box both cores are busy with the model; a loader process would only steal them.
    if device.type == "cpu":
        return 0 if cpus <= 2 else min(4, cpus // 2)
    return min(8, max(1, cpus - 1))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _freeze_body(model: nn.Module, head_name: str, frozen: bool) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = (not frozen) or name.startswith(head_name + ".")


def _train_mode(model: nn.Module) -> None:
    """train(), except BatchNorm layers whose weights are frozen keep their ImageNet statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def _param_groups(model: nn.Module, head_name: str, config: "TrainConfig", frozen: bool):
    head = [p for n, p in model.named_parameters() if n.startswith(head_name + ".")]
    if frozen:
        return [{"params": head, "lr": config.lr}]
    body = [p for n, p in model.named_parameters() if not n.startswith(head_name + ".")]
    return [{"params": body, "lr": config.lr / config.body_lr_div}, {"params": head, "lr": config.lr / config.unfrozen_lr_div}]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    criterion = nn.CrossEntropyLoss(reduction="sum")
    for x, y in loader:
        x, y = _to_device(x, y, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model(x)
        loss_sum += criterion(logits.float(), y).item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    return {"val_loss": loss_sum / count, "val_accuracy": correct / count}


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device):
    if device.type == "cuda":  # channels_last feeds cuDNN's fastest convolution kernels under AMP
        return x.to(device, non_blocking=True, memory_format=torch.channels_last), y.to(device, non_blocking=True)
    return x, y


def _loaders(split: DataSplit, contract: PreprocessContract, config: TrainConfig, device: torch.device):
    workers = config.workers if config.workers is not None else _default_workers(device)
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(
        ImageListDataset(split.train, train_transforms(contract, config.aug, device)[0]),
        batch_size=config.batch_size, shuffle=True, drop_last=len(split.train) > config.batch_size,
        generator=generator, **common,
    )
    val = DataLoader(ImageListDataset(split.val, eval_transform(contract)), batch_size=config.batch_size, **common)
    return train, val


def fit(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, progress: bool = True) -> TrainResult:
    """Fine-tune ``config.arch`` on an image folder; writes ``best.pt`` and ``metrics.json`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    _seed_everything(config.seed)

    split = scan_image_folder(data_dir, valid_pct=config.valid_pct, seed=config.seed, label_from=config.label_from)
    tqdm.write(split.class_table())
    for item in split.skipped:
        tqdm.write(f"skipped {item['path']}: {item['reason']}")
    (out_dir / "data_report.json").write_text(json.dumps(split.report(), indent=2))
    (out_dir / "val_files.txt").write_text("".join(f"{p}\n" for p, _ in split.val))  # for edge-predict -

    imagenet = arch_contract(config.arch)
    contract = PreprocessContract(**{**imagenet.to_dict(), "labels": split.classes})
    model = build_pretrained(config.arch, config.weights)
    head_name = head_module_name(model)
    replace_head(model, len(split.classes))
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    train_loader, val_loader = _loaders(split, contract, config, device)
    batch_augment = train_transforms(contract, config.aug, device)[1]  # the GPU half of --aug, or None
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    phases = [("frozen", config.freeze_epochs), ("unfrozen", config.epochs)]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    best_path, metrics_path = out_dir / "best.pt", out_dir / "metrics.json"
    epoch = 0
    for phase, n_epochs in phases:
        if n_epochs == 0:
            continue
        frozen = phase == "frozen"
        _freeze_body(model, head_name, frozen)
        groups = _param_groups(model, head_name, config, frozen)
        optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
        # Small datasets give few steps per phase: a short warm-up from lr/10 keeps the peak's area large.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=n_epochs * len(train_loader),
            pct_start=0.2, div_factor=10.0,
        )
        for _ in range(n_epochs):
            epoch += 1
            start = time.perf_counter()
            _train_mode(model)
            loss_sum, seen = 0.0, 0
            bar = tqdm(train_loader, desc=f"epoch {epoch} ({phase})", leave=False, disable=not progress)
            for x, y in bar:
                x, y = _to_device(x, y, device)
                x = batch_augment(x) if batch_augment is not None else x
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                    loss = criterion(model(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.item() * len(y)
                seen += len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            row = {"epoch": epoch, "phase": phase, "train_loss": loss_sum / seen, **evaluate(model, val_loader, device)}
            row["error_rate"] = 1.0 - row["val_accuracy"]
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            tqdm.write(
                f"epoch {epoch:>2} {phase:<8}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                f"accuracy {row['val_accuracy']:.4f}  {row['seconds']:.1f}s"
            )
            if not best or (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"], -best["val_loss"]):
                best = dict(row)
                save_checkpoint(
                    best_path, arch=config.arch, state_dict=model.state_dict(), contract=contract, epoch=epoch,
                    metrics=best, val_files=[str(p) for p, _ in split.val],
                )
            metrics = {"best": best, "history": history, "config": asdict(config), "device": str(device),
                       "data": {k: v for k, v in split.report().items() if k != "skipped"},
                       "skipped": split.skipped}
            metrics_path.write_text(json.dumps(metrics, indent=2))
    return TrainResult(best_path, metrics_path, best, history)
