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
@click.option("--formats", default="onnx",
              help="Comma-separated: onnx, onnx-int8, openvino, openvino-int8. FP32 ONNX is always built and verified first.")
@click.option("--calib", "calib_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Representative images (recursive) for INT8 calibration, e.g. the train set.")
@click.option("--calib-size", type=click.IntRange(min=1), default=100, help="Calibration images, spread over --calib.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax")
@click.option("--target-cpu", type=click.Choice(["host", "avx2", "avx512", "vnni", "arm64"]), default="host",
              help="CPU the onnx-int8 model is built for (picks U8S8 / reduce_range).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local ImageNet state dict for a torchvision:<name> source (offline).")
def main(source: str, out_dir: str, formats: str, calib_dir: str | None, calib_size: int, calib_method: str,
         target_cpu: str, weights: str | None) -> None:
    """Export SOURCE — a trainer checkpoint (RUN_DIR/best.pt) or torchvision:<arch> with its ImageNet
    weights — to an ONNX bundle that carries its preprocessing contract, verified against PyTorch
    on real images."""
    from .pipeline import export_bundle  # torch loads only when there is work to do

    try:
        export_bundle(source, out_dir, formats=formats, calib_dir=calib_dir, calib_size=calib_size,
                      calib_method=calib_method, target_cpu=target_cpu, weights=weights,
                      log=lambda msg: click.echo(msg, err=True))
    except VerificationError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_VERIFICATION) from exc
    except (EdgeportError, FileNotFoundError, ImportError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc


if __name__ == "__main__":
    main()
