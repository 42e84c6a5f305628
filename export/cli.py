"""``edge-export``: PyTorch checkpoint → verified, gated bundle (model files, labels.txt, manifest.json).

Exit codes come from the error types (``edgeport.runtime.errors.EXIT_CODES``, docs/exit-codes.md) and
are also the report's ``exit_code``. On any failure the previous bundle at --out is left untouched.
"""

from __future__ import annotations

import click
from edgeport.runtime.cli_support import debug_option, exit_on_error
from edgeport.runtime.formats import format_names

from .formats.int8_scheme import CALIB_METHODS, INT8_ENGINES, INT8_METHODS, TARGET_CPUS


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("source")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Bundle folder to write.")
@click.option("--formats", default="onnx",
              help=f"Comma-separated: {', '.join(format_names())}. FP32 ONNX is always built and verified first.")
@click.option("--calib", "calib_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Representative images (recursive) for INT8 calibration, e.g. the train set.")
@click.option("--calib-size", type=click.IntRange(min=1), default=100, help="Calibration images, spread over --calib.")
@click.option("--int8-engine", type=click.Choice(INT8_ENGINES), default="onnxruntime",
              help="Quantizer of onnx-int8 (both give a QDQ model for onnxruntime): onnxruntime's quantize_static "
                   "+ bias correction (fast on onnxruntime's CPU kernels), or NNCF (accuracy control with --max-drop; "
                   "measured not faster than FP32 on onnxruntime). openvino-int8 always uses NNCF.")
@click.option("--int8-method", type=click.Choice(INT8_METHODS), default="ptq",
              help="With --int8-engine onnxruntime: round INT8 weights to nearest (ptq), or learn each layer's rounding so "
                   "its output on the calibration images matches FP32 (adaround; same QDQ layout and speed, minutes more "
                   "export). The manifest's int8_method names what made each INT8 file.")
@click.option("--int8-time-budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --int8-method adaround: seconds it may spend; layers not reached keep nearest rounding.")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=None,
              help="onnxruntime's calibrator (with --int8-engine onnxruntime; default minmax).")
@click.option("--bias-correction/--no-bias-correction", default=True,
              help="With --int8-engine onnxruntime: after quantize_static, shift each layer's bias so its mean output on "
                   "the calibration images matches FP32 (measured: 93.46% → 96.08% top-1 on the hymenoptera fine-tune).")
@click.option("--target-cpu", type=click.Choice(TARGET_CPUS), default="host",
              help="CPU the onnx-int8 model is built for (picks U8S8 / reduce_range).")
@click.option("--target-runtime", default=None, metavar="onnxruntime==X.Y",
              help="Oldest onnxruntime the ONNX files must load in (picks their IR version and opset) "
                   "[default: the onnxruntime floor edgeport declares].")
@click.option("--eval", "eval_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Images to measure every format against PyTorch on; class sub-folders named like the labels give top-1.")
@click.option("--max-drop", type=float, default=None,
              help="Accuracy gate: top-1 points a format may lose vs PyTorch on --eval (agreement when unlabelled). "
                   "The NNCF quantizers aim at it: operations too sensitive to quantize stay in float (listed in the manifest).")
@click.option("--require-speedup", is_flag=True, help="Speed gate: every INT8 format must be faster than FP32 ONNX.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a JSON report (per format: size, sha256, top-1, Δ vs torch, latency, gates), also on failure.")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Sign the bundle with this elliptic-curve private key (PEM; OpenSSF model-signing, needs [signing]) as "
                   "the last step of the atomic build: model.sig covers every file. Devices verify it with --verify-key. "
                   "An encrypted key takes its password from $EDGEPORT_SIGN_KEY_PASSWORD.")
@click.option("--sign-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --sign-key: sign with the certificate method; this is the key's signing certificate (PEM). "
                   "Devices then verify with --verify-key CA.pem.")
@click.option("--sign-cert-chain", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="With --sign-cert (required there): the issuing CA and intermediate certificates to carry in the signature (repeatable).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local ImageNet state dict for a torchvision:<name> source (offline).")
@debug_option
def main(source: str, out_dir: str, debug: bool, **options) -> None:
    """Export SOURCE — a trainer checkpoint (RUN_DIR/best.pt) or torchvision:<arch> with its ImageNet
    weights — to a bundle whose model files carry their preprocessing contract, verified against
    PyTorch on real images and, with --eval/--max-drop/--require-speedup, gated like a compiler."""
    with exit_on_error(debug):
        from .pipeline import export_bundle  # torch loads only when there is work to do

        export_bundle(source, out_dir, log=lambda msg: click.echo(msg, err=True), **options)


if __name__ == "__main__":
    main()
