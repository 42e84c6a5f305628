"""Figure set 2: the hymenoptera fine-tune (MobileNetV2, 1 frozen + 1 unfrozen epoch, seed 0 — the
`make release-model` recipe) in every format, top-1 accuracy on its val split."""

from __future__ import annotations

from pathlib import Path

from edgeport.export import export_bundle, run_benchmark
from edgeport.trainer import TrainConfig, fit

from .common import ALL_FORMATS, REPO, hymenoptera_dir, write_results

COMMAND = "python -m benchmarks hymenoptera"


def main(out: Path = REPO / "build" / "benchmarks" / "hymenoptera", checkpoint: Path | None = None, **bench_options) -> dict:
    """Fine-tune (or take ``checkpoint``, a best.pt of the same recipe), export every format, measure."""
    data = hymenoptera_dir()
    if checkpoint is None:
        checkpoint = fit(data, out / "run", TrainConfig(arch="mobilenet_v2", freeze_epochs=1, epochs=1, seed=0)).best_path
    bundle = out / "bundle"
    export_bundle(str(checkpoint), bundle, formats=ALL_FORMATS, calib_dir=data / "train", calib_size=100)
    report = run_benchmark(str(bundle), data / "val", **bench_options)
    write_results(report, out, COMMAND)
    return report
