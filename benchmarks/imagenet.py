"""Figure set 1: torchvision's ImageNet MobileNetV2 in every format, top-1 agreement with PyTorch on
the hymenoptera photos (INT8 calibrated on train, measured on val; ants/bees are not ImageNet's
labels, so agreement is the metric)."""

from __future__ import annotations

from pathlib import Path

from edgeport.export import export_bundle, run_benchmark

from .common import ALL_FORMATS, REPO, hymenoptera_dir, write_results

COMMAND = "python -m benchmarks imagenet"


def main(out: Path = REPO / "build" / "benchmarks" / "imagenet", **bench_options) -> dict:
    data = hymenoptera_dir()
    bundle = out / "bundle"
    export_bundle("torchvision:mobilenet_v2", bundle, formats=ALL_FORMATS, calib_dir=data / "train", calib_size=100)
    report = run_benchmark(str(bundle), data / "val", **bench_options)
    write_results(report, out, COMMAND)
    return report
