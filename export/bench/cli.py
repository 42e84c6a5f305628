"""``edge-bench``: every deployed format of a model against its PyTorch original, on the same images.

Exit codes come from the error types (``edgeport.runtime.errors.EXIT_CODES``, docs/exit-codes.md).
Imports nothing of torch, onnx or tqdm until there is work to do: ``--help`` works on a device install.
"""

from __future__ import annotations

import click
from edgeport.runtime.cli_support import debug_option, exit_on_error
from edgeport.runtime.formats import format_names

TORCH = "torch"  # the PyTorch original's row (bench.run.TORCH)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("model")
@click.option("--data", "data", type=click.Path(file_okay=False), required=True,
              help="Images to measure on; class sub-folders named like the labels give top-1, otherwise agreement with torch.")
@click.option("--formats", default=None, help=f"Comma-separated: {', '.join([TORCH, *format_names()])} [default: all that exist; from a checkpoint, those that "
                   "need no --calib unless it is given].")
@click.option("--batch", type=click.IntRange(min=1), default=8, help="Batch size of the throughput measurement.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads [default: each backend's].")
@click.option("--runs", type=click.IntRange(min=1), default=50, help="At least this many timed batch-1 calls per format (interleaved in blocks of 10) …")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=10.0, help="… and at least this long measuring.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, help="Untimed calls per format first.")
@click.option("--e2e-images", type=click.IntRange(min=1), default=20, help="Files timed decode → top-k per format.")
@click.option("--cold-starts", type=click.IntRange(min=0), default=3, help="edge-predict processes per format (0 skips).")
@click.option("--calib", "calib_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="INT8 calibration images when MODEL is a checkpoint or torchvision:<name> (exported first).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON (documented schema).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG: accuracy vs latency, latency bars.")
@click.option("--verify-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Measure only a bundle signed by this EC public key (PEM; needs [signing]) [default: $EDGEPORT_VERIFY_KEY].")
@click.option("--tta", is_flag=True, help="The torch row also reports accuracy with test-time augmentation (mean of "
              "the crop and its mirror, as edge-train --tta); no deployed format has it.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@debug_option
def main(model: str, data: str, json_path: str | None, plot_path: str | None, quiet: bool, debug: bool, **options) -> None:
    """Benchmark MODEL — an edge-export bundle, an .onnx/.xml file, a trainer checkpoint or
    torchvision:<arch> — format by format against PyTorch on the images of --data."""
    with exit_on_error(debug):
        from .report import markdown_table, write_plot, write_report
        from .run import BenchOptions, run_benchmark

        report = run_benchmark(model, data, BenchOptions(progress=not quiet, **options))
        click.echo(markdown_table(report))
        if json_path:
            write_report(report, json_path)
        if plot_path:
            write_plot(report, plot_path)


if __name__ == "__main__":
    main()
