"""Transfer learning by strategy (head / finetune / gradual / full), one-cycle LR in each phase.

Every epoch writes ``best.pt`` (when it improves) and ``last.pt`` atomically; ``last.pt`` holds the
optimizer, scheduler and RNG state, so ``resume=True`` continues a killed run exactly.

Started by torchrun, ``fit`` trains data-parallel (``distributed.py``): ``batch_size`` is the global
batch, split evenly over the processes; each process sees its ``DistributedSampler`` shard of the
training set and an exact shard of the validation set, whose results are gathered so the metrics
cover every validation image once; rank 0 alone scans the data, runs the LR finder and writes files.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import EdgeportError, UsageError
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from . import reports
from .augment import train_transforms
from .averaging import make_average
from .balance import BALANCE_MODES, balanced_sampler, class_weights
from .calibrate import calibrate_checkpoint
from .checkpoint import load_run_state, save_checkpoint, save_run_state
from .choices import AMP_MODES, DEFAULT_UNKNOWN_SCORE, UNKNOWN_SCORES
from .data import DataSplit, ImageListDataset, RecordingLoader, collate_with_failures, eval_dataset, scan_image_folder
from .decode_cache import DecodeCache, default_limit_bytes
from .devices import Precision, choose_precision, default_workers, resolve_device, seed_everything
from .distributed import DEFAULT_TIMEOUT_S, Dist, init_distributed, is_collective_failure, merge_shards, shard_indices
from .head_init import FOLDS, ProbeResult, linear_probe
from .init_from import add_new_frames, describe_parts, load_init_weights, parts_accuracy
from .lr_find import LRFindResult, lr_advice, lr_find, plot_lr_find
from .models import arch_contract, build_pretrained, replace_head
from .recipe import DEFAULT_RECIPE, get_recipe
from .scan import SCAN_MODES
from .steps import evaluate, train_step, tta_accuracy
from .strategies import STRATEGIES, Phase, plan_phases, set_trainable, train_mode
from .transforms import eval_geometry

__all__ = ["TrainConfig", "TrainResult", "fit", "find_lr", "resolve_device", "LR_SCALING_RULE"]

T = TypeVar("T")

#: Printed at the start of every run and repeated in the docs.
LR_SCALING_RULE = ("--batch-size is the global batch, split evenly over the processes, and --lr is the LR for that "
                   "global batch: adding processes changes neither. If you raise --batch-size, raise --lr by the "
                   "same factor (linear scaling rule; --lr auto re-measures it)")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "mobilenet_v2"
    strategy: str = "finetune"  # head | finetune | gradual | full (see strategies.plan_phases)
    epochs: int = 3  # unfrozen epochs, after the head-only ones
    freeze_epochs: int = 1
    lr: float | str = 2e-3  # the new head's peak LR while the body is frozen (fastai's base_lr); "auto": the finder's
    recipe: str = DEFAULT_RECIPE  # per-phase LRs, schedules, BatchNorm, loss (recipe.RECIPES)
    unfrozen_lr_div: float | None = None  # None: the recipe's (unfrozen, the head peaks at lr / this) ...
    lr_mult: float | None = None  # ... the earliest body group at that / lr_mult, groups between geometrically
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
    scan: str = "header"  # header: cheap file checks, decode errors caught in the loader; full: decode every file first
    labels_csv: str | None = None  # path,label[,valid] rows, paths relative to the data folder
    val_csv: str | None = None  # path[,label] rows of the validation images (with labels_csv)
    balance: str = "none"  # none | weights (class-weighted loss) | sampler (class-balanced batches)
    tta: bool = False  # also report validation accuracy with test-time augmentation (steps.TTA)
    unknown_score: str = DEFAULT_UNKNOWN_SCORE  # the "unknown" score fitted at the end (calibrate.py), or "none"
    init_from: str | None = None  # a checkpoint (RUN/best.pt) to continue from instead of ImageNet + a new head
    new_frames: str | None = None  # reviewed frames (DIR/<class>/…): valid_pct of them to val, the rest to train
    amp: str = "auto"  # autocast (devices.choose_precision): auto | on | off
    cache_mb: int | None = None  # decoded-image cache (decode_cache.py): None a quarter of the memory, 0 off

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.freeze_epochs < 0 or self.epochs + self.freeze_epochs == 0:
            raise UsageError("need at least one epoch: --epochs and --freeze-epochs are ≥ 0 and not both 0")
        if self.lr != "auto" and (isinstance(self.lr, str) or self.lr <= 0):
            raise UsageError(f"--lr must be a number > 0 or 'auto', got {self.lr!r}")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be ≥ 1")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if (self.lr_mult is not None and self.lr_mult < 1) or (self.unfrozen_lr_div is not None and self.unfrozen_lr_div <= 0):
            raise UsageError("--lr-mult must be ≥ 1 and the unfrozen LR divisor > 0")
        get_recipe(self.recipe)  # a UsageError naming the choices
        if self.balance not in BALANCE_MODES:
            raise UsageError(f"--balance must be one of {', '.join(BALANCE_MODES)}, got {self.balance!r}")
        if self.unfreeze is not None and (self.strategy != "gradual" or self.unfreeze < 1):
            raise UsageError("--unfreeze K (K ≥ 1, or 'full') only goes with --strategy gradual")
        if self.scan not in SCAN_MODES:
            raise UsageError(f"--scan must be one of {', '.join(SCAN_MODES)}, got {self.scan!r}")
        if self.labels_csv is not None and self.label_from != "folder":
            raise UsageError("--labels-csv and --label-from both set the labels; use one of them")
        if self.unknown_score not in UNKNOWN_SCORES:
            raise UsageError(f"--unknown-score must be one of {', '.join(UNKNOWN_SCORES)}, got {self.unknown_score!r}")
        if self.val_csv is not None and self.labels_csv is None:
            raise UsageError("--val-csv goes with --labels-csv (folders fix the split with DATA/train and DATA/val)")
        if self.amp not in AMP_MODES:
            raise UsageError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.cache_mb is not None and self.cache_mb < 0:
            raise UsageError(f"--cache-mb must be ≥ 0 (0 turns the decode cache off), got {self.cache_mb}")
        if self.new_frames is not None and not 0.0 < self.valid_pct < 1.0:
            raise UsageError(f"--valid-pct (the new frames' val share) must be between 0 and 1, got {self.valid_pct}")

    def phases(self) -> list[Phase]:
        if self.lr == "auto":
            raise UsageError("resolve --lr auto with the LR finder before planning phases")
        return plan_phases(self.strategy, freeze_epochs=self.freeze_epochs, epochs=self.epochs, lr=float(self.lr),
                           unfrozen_lr_div=self.unfrozen_lr_div, lr_mult=self.lr_mult, unfreeze=self.unfreeze,
                           recipe=get_recipe(self.recipe))


@dataclass
class TrainResult:
    best_path: Path
    metrics_path: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    last_path: Path | None = None
    lr_find: dict[str, Any] | None = None


def _workers(config: TrainConfig, device: torch.device) -> int:
    return config.workers if config.workers is not None else default_workers(device)


def _decode_cache(config: TrainConfig, contract: PreprocessContract, device: torch.device,
                  say: Callable[[str], None]) -> DecodeCache | None:
    """The run's decoded-image cache, or None: turned off (``--cache-mb 0``), or loader workers decode (each would
    fill a copy of its own; decode_cache.py)."""
    if config.cache_mb == 0 or _workers(config, device) > 0:
        return None
    limit = default_limit_bytes() if config.cache_mb is None else config.cache_mb << 20
    return DecodeCache(limit, eval_geometry(contract), say)


def _loaders(split: DataSplit, contract: PreprocessContract, config: TrainConfig, device: torch.device, ctx: Dist,
             cache: DecodeCache | None):
    """Train: this rank's ``DistributedSampler`` shard (reshuffled by ``set_epoch``). Val: the exact shard
    ``rank::world_size`` (``DistributedSampler`` would pad it with repeats). Both record decode failures."""
    workers = _workers(config, device)
    per_rank = config.batch_size // ctx.world_size
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0,
              "collate_fn": collate_with_failures}
    generator = torch.Generator().manual_seed(config.seed)
    train_set = ImageListDataset(split.train, train_transforms(contract, config.aug, device)[0], substitute=True,
                                 **({} if cache is None else {"images": cache.source}))
    if config.balance == "sampler":
        if ctx.active:
            raise UsageError("--balance sampler runs in one process; use --balance weights with --nproc-per-node")
        sampler = balanced_sampler([label for _, label in split.train], len(split.classes), config.seed)
    else:
        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
    train = DataLoader(train_set, batch_size=per_rank, sampler=sampler, drop_last=len(sampler) > per_rank,
                       generator=generator, **common)
    val_set = eval_dataset(split.val, contract, cache)
    val = DataLoader(Subset(val_set, shard_indices(len(val_set), ctx.rank, ctx.world_size)), batch_size=per_rank, **common)
    return RecordingLoader(train), RecordingLoader(val), generator


def _on_main(ctx: Dist, work: Callable[[], T]) -> T:
    """``work()`` on rank 0, its result (or its error, raised again) on every rank."""
    if not ctx.active:
        return work()
    outcome: tuple[str, Any] = ("ok", None)
    if ctx.is_main:
        try:
            outcome = ("ok", work())
        except Exception as exc:  # sent to the other ranks, then raised here too
            try:
                pickle.loads(pickle.dumps(exc))
                outcome = ("error", exc)
            except Exception:
                outcome = ("error", EdgeportError(str(exc)))
            ctx.broadcast(outcome)
            raise
    kind, value = ctx.broadcast(outcome)
    if kind == "error":
        raise value
    return value


def _scan(data_dir: str | Path, config: TrainConfig) -> DataSplit:
    if config.labels_csv is not None:
        from .label_csv import split_from_csv

        split = split_from_csv(data_dir, config.labels_csv, config.val_csv, valid_pct=config.valid_pct, seed=config.seed,
                               scan=config.scan)
    else:
        split = scan_image_folder(data_dir, valid_pct=config.valid_pct, seed=config.seed, label_from=config.label_from,
                                  scan=config.scan)
    if config.new_frames is not None:
        split = add_new_frames(split, config.new_frames, config.valid_pct, config.seed, config.scan)
    return split


def _prepare(data_dir: str | Path, out_dir: Path, config: TrainConfig, device: torch.device, ctx: Dist | None = None,
             precision: Precision | None = None):
    """Split the data (on rank 0), build the pretrained model with a fresh head (in ``precision``'s memory format;
    default: ``choose_precision``), the decode cache and the loaders."""
    ctx = ctx or Dist(device=device)
    seed_everything(config.seed)
    split = _on_main(ctx, lambda: _scan(data_dir, config))
    if len(split.val) < ctx.world_size:
        raise UsageError(f"{len(split.val)} validation images cannot be shared by {ctx.world_size} processes; "
                         "use fewer processes or more validation images")
    if ctx.is_main:
        tqdm.write(split.class_table())
        for item in split.skipped:
            tqdm.write(f"skipped {item['path']}: {item['reason']}")
        (out_dir / "data_report.json").write_text(json.dumps(split.report(), indent=2))
        (out_dir / "val_files.txt").write_text("".join(f"{p}\n" for p, _ in split.val))  # for edge-predict -
    imagenet = arch_contract(config.arch)
    contract = PreprocessContract(**{**imagenet.to_dict(), "labels": split.classes})
    model = build_pretrained(config.arch, config.weights)
    replace_head(model, len(split.classes), get_recipe(config.recipe).head)
    if config.init_from is not None:
        load_init_weights(model, config.init_from, config.arch, split.classes, get_recipe(config.recipe).head)
    model.to(device)
    if (precision or choose_precision(device, config.amp)).channels_last:
        model.to(memory_format=torch.channels_last)
    cache = _decode_cache(config, contract, device, tqdm.write if ctx.is_main else (lambda _: None))
    return split, contract, model, cache, *_loaders(split, contract, config, device, ctx, cache)


def _run_lr_find(model: nn.Module, loader: DataLoader, device: torch.device, out_dir: Path, config: TrainConfig,
                 progress: bool, precision: Precision):
    set_trainable(model, Phase("lr_find", 1, 0, 1.0, 1.0))  # like fastai: the finder runs on the frozen model
    shuffle_state = loader.generator.get_state()
    result = lr_find(model, loader, device, num_it=config.lr_find_iters, progress=progress,
                     precision=precision)
    loader.generator.set_state(shuffle_state)  # training then sees the batches it would have seen without it
    return _report_sweep(result, out_dir)


def _fit_head(model: nn.Module, split: DataSplit, contract: PreprocessContract, cache: DecodeCache | None, per_rank: int,
              device: torch.device, ctx: Dist, seed: int, progress: bool, say: Callable[[str], None],
              l2: float | None = None) -> ProbeResult:
    """The linear probe (head_init.py) on the training images, and its line; with ``l2`` (the probe's) the refit of
    the last epoch."""
    probe = linear_probe(model, eval_dataset(split.train, contract, cache), len(split.classes), per_rank, device, ctx, seed,
                         progress, l2)
    if l2 is None:
        say(f"linear probe: head fitted on {probe.images} training images' features in {probe.seconds:.1f} s "
            f"(L2 {probe.l2:g} by repeated {FOLDS}-fold log-loss; cross-validated accuracy {probe.cv_accuracy:.4f})")
    else:
        say(f"head refit: fitted on the trained body's features of {probe.images} training images (eval transform) "
            f"in {probe.seconds:.1f} s, with the linear probe's L2 {l2:g}")
    return probe


def _lr_advice(config: TrainConfig, found: dict) -> str | None:
    """The 10× line (``lr_find.lr_advice``) where ``--lr`` is the new head's LR: not after ``--lr auto``, and not for
    ``full``, whose ``--lr`` drives the whole pretrained network from the first step (far below a head's valley)."""
    if config.lr == "auto" or config.strategy == "full":
        return None
    return lr_advice(float(config.lr), found)


def _report_sweep(result: LRFindResult, out_dir: Path) -> LRFindResult:
    """``lr_find.png`` and the suggestions' line, for either finder."""
    plot_lr_find(result, out_dir / "lr_find.png")
    tqdm.write(f"lr_find: valley {result.valley:.2e}  steep {result.steep:.2e}  → {out_dir / 'lr_find.png'}")
    return result


def find_lr(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, progress: bool = True) -> LRFindResult:
    """``edge-train --lr-find``: sweep the LR on the frozen model, write ``lr_find.png``, train nothing. With the
    recipe's linear probe the sweep is the probe's, on the training images' features, as ``--lr auto`` takes it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--lr-find runs in one process; start it without torchrun / --nproc-per-node")
    device = resolve_device(config.device)
    precision = choose_precision(device, config.amp)
    split, contract, model, cache, train_loader, _, _ = _prepare(data_dir, out_dir, config, device, precision=precision)
    if get_recipe(config.recipe).head_init == "linear_probe":
        probe = _fit_head(model, split, contract, cache, config.batch_size, device, Dist(), config.seed, progress, tqdm.write)
        return _report_sweep(LRFindResult(**probe.lr_find), out_dir)
    return _run_lr_find(model, train_loader, device, out_dir, config, progress, precision)


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


def _write_reports(out_dir: Path, classes: list[str], val_files: list[Path], best_eval: dict[str, torch.Tensor],
                   metrics: dict[str, Any]) -> None:
    """Pictures and per-class metrics of the best epoch's validation pass."""
    targets, preds = best_eval["targets"].numpy(), best_eval["preds"].numpy()
    matrix = reports.confusion_matrix(targets, preds, len(classes))
    metrics["per_class"] = reports.per_class_metrics(matrix, classes)
    metrics["confusion_matrix"] = matrix.tolist()
    reports.plot_curves(metrics["history"], out_dir / "curves.png")
    reports.plot_confusion(matrix, classes, out_dir / "confusion_matrix.png")
    metrics["top_losses"] = reports.plot_top_losses(
        val_files, targets, preds, best_eval["losses"].numpy(), best_eval["probs"].numpy(), classes,
        out_dir / "top_losses.png")
    reports.write_metrics(out_dir, metrics)
    for name, m in metrics["per_class"].items():
        tqdm.write(f"{name:>16}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  n={m['support']}")


def _gather_evaluation(ctx: Dist, evaluation: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every rank's shard merged back in val order, minus the images the loader could not decode (and that mask)."""
    merged = merge_shards(ctx.all_gather(evaluation))
    decoded = merged["targets"] >= 0
    return {k: v[decoded] for k, v in merged.items()}, decoded


def _record_failures(ctx: Dist, split: DataSplit, loaders: list[RecordingLoader], out_dir: Path) -> bool:
    """Decode failures the loaders met on any rank → ``split.skipped`` and data_report.json (rank 0). True if new."""
    found: dict[str, str] = {}
    for part in ctx.all_gather({k: v for loader in loaders for k, v in loader.failures.items()}):
        found.update(part)
    known = {item["path"] for item in split.skipped}
    new = [{"path": path, "reason": reason, "found": "loader"} for path, reason in sorted(found.items()) if path not in known]
    split.skipped.extend(new)
    if new and ctx.is_main:
        for item in new:
            tqdm.write(f"skipped {item['path']} while loading: {item['reason']}")
        (out_dir / "data_report.json").write_text(json.dumps(split.report(), indent=2))
    return bool(new)


def _pct_start(pct_start: float, total_steps: int) -> float:
    """The recipe's warm-up share, except where torch's OneCycleLR would divide by zero: a warm-up of exactly one
    step (``pct_start × steps == 1``, e.g. 0.2 × 5 steps on a 44-image set at batch 8) gets one and a half."""
    return 1.5 / total_steps if abs(pct_start * total_steps - 1.0) < 1e-9 else pct_start


def _gathered_tta(ctx: Dist, model: nn.Module, loader: DataLoader, device: torch.device, precision: Precision) -> float:
    correct, total = ctx.sum(*tta_accuracy(model, loader, device, precision))
    return correct / total


def _decoded_files(split: DataSplit, decoded: torch.Tensor | None) -> list[Path]:
    """The validation files that the best epoch's evaluation covers (all of them unless the loader failed on some)."""
    return [p for i, (p, _) in enumerate(split.val) if decoded is None or decoded[i]]


def fit(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, progress: bool = True,
        resume: bool = False, dist_timeout: float = DEFAULT_TIMEOUT_S) -> TrainResult:
    """Fine-tune ``config.arch`` on an image folder into ``out_dir`` (best.pt, last.pt, metrics, pictures).

    ``resume=True`` continues the run in ``out_dir`` from its ``last.pt`` with that run's own config
    (``config`` is ignored then) and the same optimizer, scheduler and RNG state. Under torchrun the
    process group is opened here (``dist_timeout`` seconds per collective) and closed at the end.
    """
    out_dir = Path(out_dir)
    state = load_run_state(out_dir) if resume else None  # every rank reads it: multi-node needs a shared RUN_DIR
    if state is not None:
        config = TrainConfig(**state["config"])
    ctx = init_distributed(config.device, dist_timeout)
    try:
        return _fit(data_dir, out_dir, config, progress and ctx.is_main, state, ctx)
    except RuntimeError as exc:
        if ctx.active and is_collective_failure(exc):  # e.g. DDP's gradient all-reduce timed out
            raise ctx.failure("training", exc) from exc
        raise
    finally:
        ctx.close()


def _fit(data_dir: str | Path, out_dir: Path, config: TrainConfig, progress: bool, state: dict[str, Any] | None,
         ctx: Dist) -> TrainResult:
    """``fit`` inside the process group: set-up, the phases' epochs, then the best epoch's reports."""
    run = _Run(data_dir, out_dir, config, progress, state, ctx)
    run.resolve_lr()
    run.restore()
    run.prepare_training()
    run.train()
    run.calibrate()
    return run.finish()


class _Run:
    """One run's state, shared by its steps. Each step is a method, called in the order of ``_fit``: the order of
    the RNG draws, the printed lines and the files is the run's, so a seed repeats it bit for bit."""

    def __init__(self, data_dir: str | Path, out_dir: Path, config: TrainConfig, progress: bool,
                 state: dict[str, Any] | None, ctx: Dist) -> None:
        """Set-up: the per-process batch, the data, the model with its new head and the loaders; a resumed run must
        see the same classes and number of processes as the run it continues."""
        self.say: Callable[[str], None] = tqdm.write if ctx.is_main else (lambda *_: None)
        if config.batch_size % ctx.world_size:
            raise UsageError(f"--batch-size {config.batch_size} (the global batch) must be a multiple of the "
                             f"{ctx.world_size} processes")
        self.config, self.progress, self.state, self.ctx, self.out_dir = config, progress, state, ctx, out_dir
        self.per_rank = config.batch_size // ctx.world_size
        out_dir.mkdir(parents=True, exist_ok=True)
        self.device = device = ctx.device
        self.precision = choose_precision(device, config.amp)
        self.say(f"{ctx.world_size} process(es), backend {ctx.backend or 'none'}, device {device}: global batch "
                 f"{config.batch_size} = {ctx.world_size} × {self.per_rank} per process. {LR_SCALING_RULE}.")
        self.say(f"precision: {self.precision.why}; channels_last {'on' if self.precision.channels_last else 'off'}")
        (self.split, self.contract, self.model, self.cache, self.train_loader, self.val_loader,
         self.generator) = _prepare(data_dir, out_dir, config, device, ctx, self.precision)
        if state is not None and state["classes"] != self.split.classes:
            raise UsageError(f"--resume {out_dir}: the run trained on classes {state['classes']}, {data_dir} has "
                             f"{self.split.classes}; pass the same DATA_DIR")
        if state is not None and state.get("world_size", 1) != ctx.world_size:  # the schedule counts per-process steps
            raise UsageError(f"--resume {out_dir}: the run used {state.get('world_size', 1)} process(es), this one "
                             f"{ctx.world_size}; resume with the same number")
        self.recipe = get_recipe(config.recipe)
        self.probe: ProbeResult | None = None
        self.lr_sweep: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.throughput: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.best_eval: dict[str, torch.Tensor] = {}
        self.done = 0  # epochs finished before a resume
        self.best_path, self.last_path = out_dir / "best.pt", out_dir / "last.pt"
        # The current phase's: the model DDP wraps, and its optimizer and schedule (None in a probe phase).
        self.net: nn.Module = self.model
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.init_before: dict[str, Any] | None = None
        if config.init_from is not None and config.new_frames is not None and state is None:
            evaluation, decoded = _gather_evaluation(ctx, evaluate(self.model, self.val_loader, device, self.precision))
            self.init_before = parts_accuracy(evaluation, decoded, self.split.val, config.new_frames)
            self.say(describe_parts("before (the deployed weights)", self.init_before))

    def fit_probe(self) -> ProbeResult:
        """The linear probe; the files it could not decode reach the data report, and a far --lr its 10× line."""
        fitted = _fit_head(self.model, self.split, self.contract, self.cache, self.per_rank, self.device, self.ctx,
                           self.config.seed, self.progress, self.say)
        self.train_loader.failures.update(fitted.undecodable)
        advice = _lr_advice(self.config, fitted.lr_find)
        if advice:
            self.say(advice)
        return fitted

    def resolve_lr(self) -> None:
        """``--lr auto`` becomes the valley of a sweep: with the recipe's probe, the sweep of the head the run trains,
        on the probe's features (milliseconds); otherwise the LR finder on images (rank 0). A resume keeps its LR."""
        if self.config.lr != "auto":
            return
        if self.state is None and self.recipe.head_init == "linear_probe":
            self.probe = self.fit_probe()
            self.lr_sweep = self.probe.lr_find
            if self.ctx.is_main:
                _report_sweep(LRFindResult(**self.lr_sweep), self.out_dir)
        else:
            self.lr_sweep = _on_main(self.ctx, lambda: _run_lr_find(self.model, self.train_loader, self.device,
                                                                   self.out_dir, self.config, self.progress,
                                                                   self.precision).to_dict())
        self.config = replace(self.config, lr=self.lr_sweep["valley"])

    def restore(self) -> None:
        """A resumed run takes back its weights, history, best epoch, LR sweep and RNG state from ``last.pt``."""
        state = self.state
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.history, self.best, self.best_eval, self.done = state["history"], state["best"], state["best_eval"], state["epoch"]
        self.throughput = state.get("throughput", [])
        self.lr_sweep = state.get("lr_find")
        _set_rng_state(state["rng"], self.generator)
        self.say(f"resuming {self.out_dir} after epoch {self.done} with its saved settings")

    def prepare_training(self) -> None:
        """What every epoch uses: the metrics' settings, the loss, the phases, the probe that starts the head when no
        phase fits it, and the weight average."""
        config, device, split, ctx, recipe, state = (self.config, self.device, self.split, self.ctx, self.recipe,
                                                     self.state)
        self.metrics: dict[str, Any] = {
            "config": asdict(config), "device": str(device), "world_size": ctx.world_size, "backend": ctx.backend,
            "global_batch": config.batch_size, "per_process_batch": self.per_rank,
            "amp": self.precision.amp, "channels_last": self.precision.channels_last,
            "data": {k: v for k, v in split.report().items() if k != "skipped"},
            "skipped": split.skipped, "lr_find": self.lr_sweep}
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.grad_scaler)
        self.batch_augment = train_transforms(self.contract, config.aug, device)[1]  # the GPU half of --aug, or None
        weight = class_weights([label for _, label in split.train], len(split.classes)) \
            if config.balance == "weights" else None
        self.criterion = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device),
                                             label_smoothing=recipe.label_smoothing)
        self.metrics["recipe"] = asdict(recipe)
        self.phases = config.phases()
        if state is not None:
            self.metrics["linear_probe"] = state.get("linear_probe")
            if state.get("head_refit"):
                self.metrics["head_refit"] = state["head_refit"]
        elif recipe.head_init == "linear_probe":
            # full, or --freeze-epochs 0: no phase fits the head, so the probe starts it here
            if self.probe is None and not any(p.probe for p in self.phases):
                self.probe = self.fit_probe()
            if self.probe is not None:
                self.metrics["linear_probe"] = asdict(self.probe)
        # recipe.ema_horizon: the weights every epoch evaluates and best.pt holds are an average of the trained ones
        self.average = make_average(self.model, recipe.ema_horizon, len(self.train_loader)) \
            if recipe.ema_horizon > 0 else None
        if self.average is not None and state is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])

    def scored(self) -> nn.Module:
        """What an epoch evaluates and best.pt holds: the average once it has taken a step, else the model."""
        return self.model if self.average is None or int(self.average.n_averaged) == 0 else self.average.module

    def train(self) -> None:
        """The phases in order, each from its first epoch not yet done (after a resume, later ones only)."""
        self.say(reports.table_header())
        end = 0
        for phase in self.phases:
            start, end = end, end + phase.epochs
            if end <= self.done:
                continue  # finished before the resume
            self.start_phase(phase, resumed_inside=self.state is not None and start < self.done)
            for epoch in range(max(self.done, start) + 1, end + 1):
                self.run_epoch(phase, epoch, last_of_phase=epoch == end)

    def start_phase(self, phase: Phase, resumed_inside: bool) -> None:
        """A phase that steps gets its trainable layers, DDP wrapper, AdamW and one-cycle schedule; a phase resumed
        after some of its epochs takes back their optimizer and schedule position."""
        self.net, self.optimizer, self.scheduler = self.model, None, None
        if phase.probe:
            return
        groups = set_trainable(self.model, phase)
        # DDP registers the parameters that need gradients when it wraps the model: once per phase.
        if self.ctx.active:
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index]
                                               if self.device.type == "cuda" else None)
        steps = phase.epochs * len(self.train_loader)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
            pct_start=_pct_start(phase.schedule.pct_start, steps),
            div_factor=phase.schedule.div, final_div_factor=phase.schedule.final_div,
        )
        if resumed_inside:  # killed mid-phase: same optimizer and schedule position
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.scheduler.load_state_dict(self.state["scheduler"])

    def run_epoch(self, phase: Phase, epoch: int, last_of_phase: bool) -> None:
        """One epoch: train (or fit the probe), evaluate, print its row, and rank 0 writes the files."""
        start = time.perf_counter()
        if phase.probe:
            loss_sum, seen, train_seconds = self.probe_epoch()
        else:
            loss_sum, seen, train_seconds = self.sgd_epoch(phase, epoch, start)
            if phase.refit and last_of_phase:
                self.refit_head(epoch)
        improved = self.validate(phase, epoch, start, loss_sum, seen, train_seconds)
        if self.ctx.is_main:  # only rank 0 writes; the other ranks hold the same numbers
            self.save(epoch, improved)

    def probe_epoch(self) -> tuple[float, int, float]:
        """The head solved on one pass of the frozen body's features, the same on every rank (already fitted for
        ``--lr auto``): its loss sum, image count and seconds."""
        if self.probe is None:
            self.probe = self.fit_probe()
            self.metrics["linear_probe"] = asdict(self.probe)
        return self.probe.train_loss * self.probe.images, self.probe.images, self.probe.seconds

    def sgd_epoch(self, phase: Phase, epoch: int, start: float) -> tuple[float, int, float]:
        """One pass of SGD steps over this rank's shuffled shard: the loss sum and image count over every rank, and
        this rank's seconds."""
        self.train_loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        if self.ctx.active:  # per-rank augmentation and dropout draws, reproducible on --resume
            seed_everything(self.config.seed + 1000 * self.ctx.rank + epoch)
        train_mode(self.model, phase.update_bn_running_stats)
        loss_sum, seen = 0.0, 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch} ({phase.name})", leave=False, disable=not self.progress)
        for x, y in bar:
            loss_sum += train_step(self.net, x, y, self.optimizer, self.scaler, self.device, self.batch_augment,
                                   self.criterion, self.precision) * len(y)
            seen += len(y)
            self.scheduler.step()
            if self.average is not None:
                self.average.update_parameters(self.model)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - start
        loss_sum, seen = self.ctx.sum(loss_sum, seen)
        return loss_sum, seen, train_seconds

    def refit_head(self, epoch: int) -> None:
        """The run's last epoch: the head it ends with, fitted in closed form on the trained body's eval-transform
        features (strategies.plan_phases: why), with the probe's L2 (a recipe with a refit has a probe)."""
        refit = _fit_head(self.scored(), self.split, self.contract, self.cache, self.per_rank, self.device, self.ctx,
                          self.config.seed, self.progress, self.say, self.metrics["linear_probe"]["l2"])
        self.metrics["head_refit"] = {"epoch": epoch, **asdict(refit)}

    def validate(self, phase: Phase, epoch: int, start: float, loss_sum: float, seen: int,
                 train_seconds: float) -> bool:
        """The epoch's validation pass over every rank's shard: its row in the history, printed; True if it is the
        best so far (plain accuracy, then loss), which then becomes ``best``."""
        ctx = self.ctx
        evaluation, decoded = _gather_evaluation(ctx, evaluate(self.scored(), self.val_loader, self.device,
                                                                self.precision))
        if _record_failures(ctx, self.split, [self.train_loader, self.val_loader], self.out_dir):
            self.metrics["skipped"] = self.split.skipped
        accuracy = (evaluation["preds"] == evaluation["targets"]).sum().item() / len(evaluation["targets"])  # exact
        row = {"epoch": epoch, "phase": phase.name, "train_loss": loss_sum / seen,
               "val_loss": evaluation["losses"].mean().item(), "val_accuracy": accuracy,
               "error_rate": 1.0 - accuracy, "seconds": time.perf_counter() - start}
        if self.config.tta:  # reported only: best.pt is still picked on plain accuracy, and TTA is never exported
            row["val_accuracy_tta"] = _gathered_tta(ctx, self.scored(), self.val_loader, self.device, self.precision)
        self.history.append(row)
        self.throughput.append({"epoch": epoch, "train_images": int(seen), "train_seconds": train_seconds,
                                "images_per_second": seen / train_seconds})
        self.say(reports.table_row(row) + (f"  (TTA accuracy {row['val_accuracy_tta']:.4f})" if self.config.tta else ""))
        best = self.best
        improved = not best or (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"], -best["val_loss"])
        if improved:
            self.best, self.best_eval = dict(row), evaluation
            self.best_eval["decoded"] = decoded
        return improved

    def save(self, epoch: int, improved: bool) -> None:
        """Rank 0's files after every epoch: ``best.pt`` when it improved, ``last.pt`` for ``--resume`` (everything
        a resume restores), and metrics.json so far."""
        config, metrics = self.config, self.metrics
        val_files = [str(p) for p in _decoded_files(self.split, self.best_eval.get("decoded"))]
        if improved:
            save_checkpoint(self.best_path, arch=config.arch, state_dict=self.scored().state_dict(),
                            contract=self.contract, epoch=epoch, metrics=self.best, val_files=val_files,
                            head=self.recipe.head)
        save_run_state(self.last_path, {
            "config": asdict(config), "classes": self.split.classes, "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer and self.optimizer.state_dict(),
            "scheduler": self.scheduler and self.scheduler.state_dict(),
            "rng": _rng_state(self.generator), "history": self.history, "best": self.best, "best_eval": self.best_eval,
            "lr_find": metrics["lr_find"], "throughput": self.throughput, "world_size": self.ctx.world_size,
            "linear_probe": metrics.get("linear_probe"), "head_refit": metrics.get("head_refit"),
            "average": None if self.average is None else self.average.state_dict(),
        })
        reports.write_metrics(self.out_dir, {**metrics, "best": self.best, "history": self.history,
                                             "throughput": self.throughput})

    def calibrate(self) -> None:
        """Rank 0: fit the temperature and the "unknown" rule to the best checkpoint (calibrate.py) and write them
        into it, so every format exported from it applies them."""
        if not self.ctx.is_main:
            return
        score = None if self.config.unknown_score == "none" else self.config.unknown_score
        self.contract, fitted, seconds = calibrate_checkpoint(self.best_path, self.split.val, self.split.train, score,
                                                              self.device, self.per_rank,
                                                              _workers(self.config, self.device), self.progress,
                                                              self.config.seed, self.cache)
        self.metrics["calibration"] = {**fitted.contract_fields(), "val_ece_before": round(fitted.ece_before, 5),
                                       "val_ece_after": round(fitted.ece_after, 5), "seconds": round(seconds, 1)}
        self.say(f"calibration: {fitted.summary()} ({seconds:.0f} s)")

    def finish(self) -> TrainResult:
        """End of run: the best epoch's per-class metrics and pictures (rank 0); every rank waits for those files
        before the process group closes."""
        metrics = self.metrics
        metrics.update(best=self.best, history=self.history, throughput=self.throughput)
        if self.cache is not None:
            metrics["decode_cache"] = self.cache.summary()
        if self.config.new_frames is not None:
            after = parts_accuracy(self.best_eval, self.best_eval.get("decoded"), self.split.val, self.config.new_frames)
            self.say(describe_parts(f"after (best epoch {self.best['epoch']})", after))
            metrics["init_from"] = {"checkpoint": self.config.init_from, "new_frames": self.config.new_frames,
                                    "before": self.init_before, "after": after}
        if self.ctx.is_main:
            val_files = _decoded_files(self.split, self.best_eval.pop("decoded", None))
            _write_reports(self.out_dir, self.split.classes, val_files, self.best_eval, metrics)
        self.ctx.barrier()
        return TrainResult(self.best_path, self.out_dir / "metrics.json", self.best, self.history, self.last_path,
                           metrics["lr_find"])
