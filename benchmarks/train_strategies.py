"""Side by side on one machine: head-only vs finetune vs full, MobileNetV2, val accuracy and wall time.

    python benchmarks/train_strategies.py DATA_DIR [--freeze-epochs 1 --epochs 1 --out runs/bench]

Every strategy trains the same number of epochs (freeze_epochs + epochs) with the same seed; wall time
includes data scanning, model building and the reports, i.e. what a user waits for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from edgeport.trainer import TrainConfig, fit


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--strategies", default="head,finetune,full", show_default=True)
@click.option("--freeze-epochs", type=int, default=1, show_default=True)
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="runs/bench", show_default=True)
def main(data_dir: str, strategies: str, freeze_epochs: int, epochs: int, seed: int, out: str) -> None:
    rows = []
    for strategy in strategies.split(","):
        config = TrainConfig(arch="mobilenet_v2", strategy=strategy, freeze_epochs=freeze_epochs, epochs=epochs,
                             seed=seed, device="cpu")
        start = time.perf_counter()
        result = fit(data_dir, Path(out) / strategy, config, progress=False)
        rows.append({"strategy": strategy, "val_accuracy": result.best["val_accuracy"],
                     "wall_s": time.perf_counter() - start, "epochs": freeze_epochs + epochs})
    click.echo("\n| strategy | epochs | best val accuracy | wall time |\n|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['strategy']} | {r['epochs']} | {100 * r['val_accuracy']:.2f}% | {r['wall_s']:.0f} s |")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "train_strategies.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
