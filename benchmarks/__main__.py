"""``python -m benchmarks imagenet|hymenoptera``: one command per figure set in benchmarks/README.md."""

from __future__ import annotations

import click


@click.command()
@click.argument("figure_set", type=click.Choice(["imagenet", "hymenoptera"]))
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads [default: each backend's].")
def main(figure_set: str, threads: int | None) -> None:
    """Export, measure every format with edge-bench, and write build/benchmarks/FIGURE_SET/{results.md,results.json,plot.png}."""
    if figure_set == "imagenet":
        from .imagenet import main as run
    else:
        from .hymenoptera import main as run
    run(threads=threads)


if __name__ == "__main__":
    main()
