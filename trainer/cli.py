"""``edge-train``: fine-tune an ImageNet-pretrained CNN on an image folder (fastai's ``fine_tune`` idea)."""

from __future__ import annotations

import os

import click
from edgeport.runtime.cli_support import debug_option, exit_on_error
from edgeport.runtime.errors import UsageError

from .choices import AMP_MODES, BALANCE_MODES, DEFAULT_UNKNOWN_SCORE, STRATEGIES, UNKNOWN_SCORES, arch_names, aug_names
from .recipe import DEFAULT_RECIPE, get_recipe, recipe_names

STRATEGY_HELP = (
    "head: frozen body, train only the new head. finetune: --freeze-epochs head-only, then everything "
    "with discriminative LRs. gradual: like finetune but unfreeze only the last --unfreeze K blocks. "
    "full: everything trainable at --lr from the start (data unlike ImageNet: medical, satellite)."
)


def _parse_lr(ctx: click.Context, param: click.Parameter, value: str) -> float | str:
    if value == "auto":
        return value
    try:
        lr = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor 'auto'") from None
    if lr <= 0:
        raise click.BadParameter("must be > 0")
    return lr


class TrainCommand(click.Command):
    """Keeps the raw arguments, which ``--nproc-per-node`` hands on to every torchrun process."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["edgeport.argv"] = list(args)
        return super().parse_args(ctx, args)


def _parse_unfreeze(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None or value == "full":
        return None
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: give a number of blocks ≥ 1, or 'full'")
    return int(value)


@click.command(cls=TrainCommand, context_settings={"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100})
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--arch", type=click.Choice(arch_names()), default="mobilenet_v2", help="Architecture (torchvision's; efficientnet_lite0 via timm).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="finetune",
              help=STRATEGY_HELP)
@click.option("--epochs", type=click.IntRange(min=0), default=3,
              help="Epochs after the head-only ones (unfrozen for finetune/gradual). Every strategy trains "
                   "--freeze-epochs + --epochs epochs in total.")
@click.option("--freeze-epochs", type=click.IntRange(min=0), default=1,
              help="Epochs first, pretrained body frozen, new head only. With the default recipe the first of them "
                   "is the linear probe: the head solved on one pass of the body's features.")
@click.option("--lr", callback=_parse_lr, default="2e-3", metavar="LR|auto",
              help="Peak LR of the new head (one-cycle per phase), or 'auto' to take the LR finder's valley. "
                   f"Unfrozen, the head peaks at LR/{get_recipe(DEFAULT_RECIPE).unfrozen_lr_div:g} (the recipe's divisor) "
                   "and the earliest layer group at that/--lr-mult.")
@click.option("--lr-mult", type=click.FloatRange(min=1), default=None,
              help=f"Discriminative LRs: head LR ÷ body LR (the default recipe: every body group there, as fastai's "
                   f"MobileNet split; classic: the earliest group there, groups between geometric) "
                   f"[default: the recipe's, {get_recipe(DEFAULT_RECIPE).lr_mult:g}].")
@click.option("--unfrozen-lr-div", type=click.FloatRange(min=0, min_open=True), default=None,
              help=f"Unfrozen phase: the head peaks at LR/this [default: the recipe's, "
                   f"{get_recipe(DEFAULT_RECIPE).unfrozen_lr_div:g}].")
@click.option("--recipe", type=click.Choice(recipe_names()), default=DEFAULT_RECIPE,
              help="Per-phase LRs, schedules, BatchNorm and loss settings (docs/training.md, 'Recipe, measured'). "
                   "default: the head-only epoch is a linear probe, BatchNorm keeps ImageNet statistics; classic: the "
                   "baseline (random head, lr/10, geometric body LRs); fastai: fastai's fine_tune settings.")
@click.option("--balance", type=click.Choice(BALANCE_MODES), default="none",
              help="Class imbalance: weights (class-weighted loss) or sampler (class-balanced batches, one process).")
@click.option("--tta", is_flag=True,
              help="Also report validation accuracy with test-time augmentation (mean over the eval crop and its "
                   "mirror) in metrics.json; best.pt and exports are unaffected.")
@click.option("--unknown-score", type=click.Choice(UNKNOWN_SCORES), default=DEFAULT_UNKNOWN_SCORE, show_default=True,
              help="The score that calls a frame 'unknown' (not one of the classes), fitted with its threshold and the "
                   "temperature on the validation split at the end (docs/training.md, 'Calibrated confidence').")
@click.option("--unfreeze", callback=_parse_unfreeze, default=None, metavar="K|full",
              help="gradual: unfreeze only the last K body blocks [default: full].")
@click.option("--lr-find", "lr_find_only", is_flag=True,
              help="Only run the LR finder: write OUT/lr_find.png, print the valley and steepest LRs, train nothing.")
@click.option("--lr-find-iters", type=click.IntRange(min=5), default=100,
              help="Mini-batches the LR finder sweeps on images (1e-7 → 10; it stops early when the loss explodes). "
                   "Recipes with the linear probe sweep its features instead: 100 steps, milliseconds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16,
              help="Global batch: with N processes each takes batch-size/N (it must divide evenly); the LR applies "
                   "to the global batch, so adding processes changes neither.")
@click.option("--valid-pct", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              help="Validation share when DATA_DIR has no train/ and val/ folders.")
@click.option("--seed", type=int, default=0, help="Same seed, same split and (on CPU) same run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: cuda when visible. cuda uses mixed precision (AMP) + channels_last.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Data loader processes [default: 0 on ≤2 CPUs, up to 4 on more; CPUs-1 with cuda].")
@click.option("--amp", type=click.Choice(AMP_MODES), default="auto", show_default=True,
              help="Autocast: auto = bfloat16/float16 on a GPU, bfloat16 on a CPU with AVX512_BF16 or AMX, else "
                   "float32; on = also where the CPU only emulates bfloat16 (slower); off = float32.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=None,
              help="Decoded-image cache: each photo decoded once per run, not once per pass [default: a quarter of "
                   "the memory]; 0 turns it off. In-process loaders only (no --workers).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local ImageNet state dict for --arch (offline, instead of torchvision's file).")
@click.option("--label-from", default="folder", metavar="folder|regex:PATTERN",
              help="Class of each image: its folder, or the first capture group of PATTERN searched in the file "
                   "name, e.g. 'regex:^([A-Za-z_]+)_\\d+' (Oxford-Pets). Files that do not match are listed as skipped.")
@click.option("--labels-csv", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Labels from a CSV with a header 'path,label' (paths relative to DATA_DIR; FILE itself as given or "
                   "inside DATA_DIR). An optional 'valid' column (1/0) fixes the split.")
@click.option("--val-csv", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="With --labels-csv: a CSV 'path[,label]' of the validation images (a fixed split instead of --valid-pct).")
@click.option("--scan", type=click.Choice(["header", "full"]), default="header",
              help="header: check files cheaply in parallel (format, size, end marker); images that still fail to "
                   "decode are skipped by the loader and listed in data_report.json. full: decode every file first.")
@click.option("--aug", type=click.Choice(aug_names()), default="light",
              help="Augmentation preset: none (eval crop), light (random crop + flip), strong (+ rotation, colour jitter).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/train",
              help="Run folder: best.pt, last.pt, metrics.json/.csv, curves.png, confusion_matrix.png, top_losses.png.")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=None, metavar="RUN/best.pt",
              help="Continue from this checkpoint (the deployed model: same --arch, classes and recipe head) instead "
                   "of ImageNet weights and a new head; prints accuracy before and after on DATA's val and the new "
                   "frames' val share.")
@click.option("--new-frames", type=click.Path(exists=True, file_okay=False), default=None, metavar="DIR",
              help="Frames labelled on the review page (DIR/<class>/…): --valid-pct of each class to val by --seed, "
                   "the rest to train, beside DATA_DIR's own split (docs/service.md, 'The loop').")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False), default=None, metavar="RUN_DIR",
              help="Continue a killed run from RUN_DIR/last.pt with its saved settings (the options above are ignored).")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1,
              help="Train data-parallel in N processes on this machine (torchrun --standalone; one per GPU on CUDA, "
                   "gloo on CPU). For several machines run torchrun yourself (docs/distributed-training.md).")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=1800.0, metavar="SECONDS",
              help="Multi-process runs: how long a process waits for the others (rank 0's scan and LR finder included) "
                   "before the job fails instead of hanging.")
@debug_option
def main(data_dir: str, arch: str, strategy: str, epochs: int, freeze_epochs: int, lr: float | str, lr_mult: float | None,
         unfrozen_lr_div: float | None, recipe: str, balance: str, tta: bool, unknown_score: str,
         unfreeze: int | None, lr_find_only: bool, lr_find_iters: int, batch_size: int, valid_pct: float, seed: int, device: str,
         workers: int | None, amp: str, cache_mb: int | None, weights: str | None, label_from: str, labels_csv: str | None, val_csv: str | None,
         scan: str, aug: str, out_dir: str, init_from: str | None, new_frames: str | None, resume_dir: str | None,
         nproc_per_node: int, dist_timeout: float, debug: bool) -> None:
    """Fine-tune --arch on DATA_DIR: either DATA_DIR/{train,val}/<class>/ images, or DATA_DIR/<class>/
    images split by --valid-pct. Writes OUT/best.pt (for edge-export), OUT/last.pt (for --resume),
    metrics and pictures.

    \b
    fastai → edge-train:
      learn.lr_find()            --lr-find
      learn.fine_tune(3, 2e-3)   --epochs 3 --freeze-epochs 1 --lr 2e-3   (the default)
      learn.fit_one_cycle(...)   --strategy head / full

    \b
    Several processes (DDP): --nproc-per-node N, or torchrun --nproc-per-node N -m edgeport.trainer DATA_DIR …
    """
    with exit_on_error(debug):
        if nproc_per_node > 1:
            from .launch import launch

            if lr_find_only:
                raise UsageError("--lr-find runs in one process; drop --nproc-per-node")
            launch(click.get_current_context().meta["edgeport.argv"], nproc_per_node)
            return
        from .training import TrainConfig, find_lr, fit  # torch import deferred so --help is instant

        if resume_dir is not None:
            result = fit(data_dir, resume_dir, TrainConfig(), resume=True, dist_timeout=dist_timeout)
        else:
            config = TrainConfig(arch=arch, strategy=strategy, epochs=epochs, freeze_epochs=freeze_epochs, lr=lr,
                                 lr_mult=lr_mult, unfrozen_lr_div=unfrozen_lr_div, recipe=recipe, balance=balance, tta=tta,
                                 unknown_score=unknown_score, unfreeze=unfreeze, lr_find_iters=lr_find_iters,
                                 batch_size=batch_size, seed=seed, valid_pct=valid_pct, device=device,
                                 workers=workers, amp=amp, cache_mb=cache_mb, weights=weights, label_from=label_from, aug=aug, scan=scan,
                                 labels_csv=labels_csv, val_csv=val_csv, init_from=init_from, new_frames=new_frames)
            if lr_find_only:
                found = find_lr(data_dir, out_dir, config)
                click.echo(f"suggested LR: valley {found.valley:.2e}, steep {found.steep:.2e}")
                return
            result = fit(data_dir, out_dir, config, dist_timeout=dist_timeout)
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 says it
    best = result.best
    click.echo(f"best val accuracy {best['val_accuracy']:.4f} (epoch {best['epoch']}) → {result.best_path}")


if __name__ == "__main__":
    main()
