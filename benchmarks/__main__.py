"""``python -m benchmarks imagenet|hymenoptera``: one command per figure set in benchmarks/README.md."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("figure_set", type=click.Choice(["imagenet", "hymenoptera"]))
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads [default: each backend's].")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="hymenoptera only: measure this best.pt (same recipe) instead of fine-tuning first.")
def main(figure_set: str, threads: int | None, checkpoint: Path | None) -> None:
    """Export, measure every format with edge-bench, and write build/benchmarks/FIGURE_SET/{results.md,results.json,plot.png}."""
    if figure_set == "imagenet":
        if checkpoint is not None:
            raise click.BadParameter("only the hymenoptera set takes a checkpoint", param_hint="--checkpoint")
        from .imagenet import main as run_imagenet

        run_imagenet(threads=threads)
    else:
        from .hymenoptera import main as run_hymenoptera

        run_hymenoptera(threads=threads, checkpoint=checkpoint)


if __name__ == "__main__":
    main()
