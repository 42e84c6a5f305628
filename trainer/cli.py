"""``edge-train``: fine-tune an ImageNet-pretrained CNN on an image folder."""

from __future__ import annotations

import click
from edgeport.runtime.errors import EdgeportError

from .augment import aug_names
from .models import arch_names


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--arch", type=click.Choice(arch_names()), default="mobilenet_v2", help="Architecture (torchvision's; efficientnet_lite0 via timm).")
@click.option("--epochs", type=click.IntRange(min=0), default=3, help="Epochs with everything unfrozen.")
@click.option("--freeze-epochs", type=click.IntRange(min=0), default=1, help="Epochs first, pretrained body frozen, new head only.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-3,
              help="Peak LR of the new head (one-cycle); unfrozen, the head peaks at LR/10 and the body at LR/100.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16)
@click.option("--valid-pct", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              help="Validation share when DATA_DIR has no train/ and val/ folders.")
@click.option("--seed", type=int, default=0, help="Same seed, same split and (on CPU) same run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="cuda uses AMP + channels_last.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data loader processes [default: 0 on ≤2 CPUs].")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local ImageNet state dict for --arch (offline, instead of torchvision's file).")
@click.option("--label-from", default="folder", metavar="folder|regex:PATTERN",
              help="Class of each image: its folder, or the first capture group of PATTERN searched in the file "
                   "name, e.g. 'regex:^([A-Za-z_]+)_\\d+' (Oxford-Pets). Files that do not match are listed as skipped.")
@click.option("--aug", type=click.Choice(aug_names()), default="light",
              help="Augmentation preset: none (eval crop), light (random crop + flip), strong (+ rotation, colour jitter).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/train", help="Run folder.")
def main(data_dir: str, arch: str, epochs: int, freeze_epochs: int, lr: float, batch_size: int, valid_pct: float,
         seed: int, device: str, workers: int | None, weights: str | None, label_from: str, aug: str,
         out_dir: str) -> None:
    """Fine-tune --arch on DATA_DIR: either DATA_DIR/{train,val}/<class>/ images, or DATA_DIR/<class>/
    images split by --valid-pct. Writes OUT/best.pt (for edge-export), OUT/metrics.json and
    OUT/data_report.json (files skipped as undecodable)."""
    from .fit import TrainConfig, fit  # torch import deferred so --help is instant

    try:
        config = TrainConfig(arch=arch, epochs=epochs, freeze_epochs=freeze_epochs, lr=lr, batch_size=batch_size,
                             seed=seed, valid_pct=valid_pct, device=device, workers=workers, weights=weights,
                             label_from=label_from, aug=aug)
        result = fit(data_dir, out_dir, config)
    except (EdgeportError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    best = result.best
    click.echo(f"best val accuracy {best['val_accuracy']:.4f} (epoch {best['epoch']}) → {result.best_path}")


if __name__ == "__main__":
    main()
