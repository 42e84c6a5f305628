"""``edge-explain``: see what a network learned (filters, activations, Grad-CAM, weight change)."""

from __future__ import annotations

from pathlib import Path

import click
from edgeport.runtime.cli_support import debug_option, exit_on_error

LAYER_HELP = "Block or module name, or early / middle / late; a wrong name lists the valid ones."


def _run(call):
    """Errors end with their documented exit code (``errors.EXIT_CODES``) and a message that says what to fix."""
    with exit_on_error(click.get_current_context().find_root().params.get("debug", False)):
        return call()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@debug_option
def main(debug: bool) -> None:
    """See what the network learned. MODEL is RUN/best.pt from edge-train or torchvision:<arch> (ImageNet weights)."""


@main.command()
@click.argument("model")
@click.option("--out", type=click.Path(dir_okay=False), default="filters.png")
def filters(model: str, out: str) -> None:
    """First-layer filters of MODEL as an image grid, each normalised on its own."""
    from .filters import save_filters

    click.echo(f"wrote {_run(lambda: save_filters(model, out))}")


@main.command()
@click.argument("model")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--layer", default="middle", help=LAYER_HELP)
@click.option("--top", type=click.IntRange(min=1), default=16, help="How many of the strongest channels to show.")
@click.option("--out", type=click.Path(dir_okay=False), default="activations.png")
def activations(model: str, image: str, layer: str, top: int, out: str) -> None:
    """The strongest channels of one layer of MODEL for IMAGE, next to the crop the network saw."""
    from .activations import save_activations

    click.echo(f"wrote {_run(lambda: save_activations(model, image, out, layer=layer, top=top))}")


@main.command()
@click.argument("model")
@click.argument("image", type=click.Path(exists=True))
@click.option("--layer", default=None, help=LAYER_HELP + "  [default: the last conv block]")
@click.option("--class", "target", default=None, help="Explain this label instead of the top class (single image).")
@click.option("--out", type=click.Path(), default="gradcam",
              help="PNG file for one image; for a folder, a folder with one overlay per image and index.html.")
def gradcam(model: str, image: str, layer: str | None, target: str | None, out: str) -> None:
    """Grad-CAM of MODEL's top class (or --class) on IMAGE, or on every image of a folder."""
    if Path(image).is_dir():
        from .gallery import grad_cam_gallery

        result = _run(lambda: grad_cam_gallery(model, image, out, layer=layer))
        for item in result.failed:
            click.echo(f"skipped {item.source}: {item.error}", err=True)
        click.echo(f"wrote {len(result.items) - len(result.failed)} overlays, {len(result.failed)} failed → {result.index}")
        return
    from .gradcam import save_grad_cam

    out_file = Path(out) if Path(out).suffix.lower() == ".png" else Path(out) / f"{Path(image).stem}.png"
    cam = _run(lambda: save_grad_cam(model, image, out_file, layer=layer, target=target))
    click.echo(f"{cam.label} {cam.score:.3f} (top-1: {cam.predicted} {cam.predicted_score:.3f}) at {cam.layer} → {out_file}")


@main.command()
@click.argument("model")
@click.option("--reference", default=None, help="Compare with this MODEL instead of the ImageNet weights of the same arch.")
@click.option("--out", type=click.Path(dir_okay=False), default="weight_change.png")
def changes(model: str, reference: str | None, out: str) -> None:
    """Relative weight change per block of MODEL against its pretrained weights, as a bar chart."""
    from .changes import save_weight_changes

    for change in _run(lambda: save_weight_changes(model, out, reference=reference)):
        value = "new" if change.relative_change is None else f"{change.relative_change:.4f}"
        click.echo(f"{change.block:14s} {value}")
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
