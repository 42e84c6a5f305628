"""``edge-export``: PyTorch checkpoint → verified bundle (model.onnx, labels.txt, manifest.json).

Exit codes: 0 exported and verified; 2 bad usage (missing or unusable source); 3 the export does
not reproduce PyTorch (verification failed, nothing written).
"""

from __future__ import annotations

import click

from edgeport.runtime.errors import EdgeportError, VerificationError

EXIT_VERIFICATION = 3


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("source")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Bundle folder to write.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local ImageNet state dict for a torchvision:<name> source (offline).")
def main(source: str, out_dir: str, weights: str | None) -> None:
    """Export SOURCE — a trainer checkpoint (RUN_DIR/best.pt) or torchvision:<arch> with its ImageNet
    weights — to an ONNX bundle that carries its preprocessing contract, verified against PyTorch
    on real images."""
    from .pipeline import export_bundle  # torch loads only when there is work to do

    try:
        export_bundle(source, out_dir, weights=weights, log=lambda msg: click.echo(msg, err=True))
    except VerificationError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_VERIFICATION) from exc
    except (EdgeportError, FileNotFoundError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="SOURCE") from exc


if __name__ == "__main__":
    main()
