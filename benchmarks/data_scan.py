"""``python -m benchmarks.data_scan``: folder-scan time and loader img/s against MobileNetV2's step time.

The data sets are N symlinks (2 000 and 20 000 by default) to the hymenoptera photos under other
names, in two class folders of a temporary directory. The photos are few, so they sit in the page
cache: the figures are the CPU cost of scanning and decoding, not of a cold disk.

Measured per size: ``--scan header`` (the default; median of 3 runs), the baseline it must beat (a full decode of
every file, one at a time), ``--scan full`` (full decodes on the scan threads); then the training
loader's img/s (decode + light augmentation) and the model's img/s in a training step on random
batches, frozen body (head only) and unfrozen (everything).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.trainer.augment import train_transforms
from edgeport.trainer.data import ImageListDataset, RecordingLoader, collate_with_failures, scan_image_folder
from edgeport.trainer.devices import choose_precision, default_workers
from edgeport.trainer.models import arch_contract, replace_head
from edgeport.trainer.scan import check_images, scan_threads
from edgeport.trainer.steps import train_step
from edgeport.trainer.strategies import Phase, set_trainable, train_mode
from torch.utils.data import DataLoader
from torchvision import models as tvm

from .common import REPO, hymenoptera_dir

#: The header scan takes about a second: its median of 3 runs. The full-decode passes take a minute, 1 run each.
HEADER_RUNS = 3


def make_dataset(root: Path, n: int, source: Path) -> None:
    """``n`` symlinks in ``root/{ants,bees}``, cycling over the source photos of that class."""
    for k, cls in enumerate(("ants", "bees")):
        photos = sorted((source / "train" / cls).glob("*.jpg")) + sorted((source / "val" / cls).glob("*.jpg"))
        (root / cls).mkdir(parents=True)
        count = n // 2 + (n % 2 if k == 0 else 0)
        for i in range(count):
            (root / cls / f"frame_{i:07d}.jpg").symlink_to(photos[i % len(photos)].resolve())


def _timed(fn) -> tuple[float, object]:
    gc.collect()  # the previous measurement's garbage is not this one's cost
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def loader_rate(root: Path, contract: PreprocessContract, batch_size: int, batches: int, workers: int) -> float:
    """Training loader img/s: decode + light augmentation, ``workers`` loader processes."""
    split = scan_image_folder(root, valid_pct=0.1)
    dataset = ImageListDataset(split.train, train_transforms(contract, "light", "cpu")[0], substitute=True)
    loader = RecordingLoader(DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                        collate_fn=collate_with_failures, generator=torch.Generator().manual_seed(0)))
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    seconds, _ = _timed(lambda: [next(it) for _ in range(batches)])
    return batches * batch_size / seconds


def step_rates(batch_size: int, steps: int) -> dict[str, float]:
    """MobileNetV2 training-step img/s on random batches: frozen body (head only) and unfrozen."""
    model = tvm.mobilenet_v2(weights=None)  # timing only: the weights do not change the cost
    replace_head(model, 2)
    x, y = torch.randn(batch_size, 3, 224, 224), torch.randint(0, 2, (batch_size,))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    precision = choose_precision(torch.device("cpu"))  # what edge-train would choose on this CPU
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    rates = {}
    for name, blocks in (("frozen", 0), ("unfrozen", None)):
        groups = set_trainable(model, Phase(name, 1, blocks, 1e-3, 10.0))
        optimizer = torch.optim.AdamW(groups)
        train_mode(model)
        train_step(model, x, y, optimizer, scaler, torch.device("cpu"), precision=precision)  # warm-up
        seconds, _ = _timed(lambda: [train_step(model, x, y, optimizer, scaler, torch.device("cpu"), precision=precision)
                                     for _ in range(steps)])
        rates[name] = steps * batch_size / seconds
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000", help="comma-separated file counts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="loader batches and model steps timed")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "benchmarks" / "data_scan")
    args = parser.parse_args()
    source = hymenoptera_dir()
    contract = arch_contract("mobilenet_v2")
    workers = default_workers(torch.device("cpu"))
    report = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "scan_threads": scan_threads(), "loader_workers": workers,
              "batch_size": args.batch_size, "sizes": []}
    steps = step_rates(args.batch_size, args.batches)
    report["model_img_per_s"] = steps
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_dataset(root, n, source)
            paths = sorted(root.rglob("*.jpg"))
            for path in paths:
                path.stat()  # the new links' metadata is warm for every measured pass alike
            runs = [_timed(lambda: check_images(paths, "header", progress=False)) for _ in range(HEADER_RUNS)]
            header, reasons = sorted(runs, key=lambda run: run[0])[HEADER_RUNS // 2]  # the median run
            serial, _ = _timed(lambda: check_images(paths, "full", threads=1, progress=False))
            full, _ = _timed(lambda: check_images(paths, "full", progress=False))
            assert not any(reasons), "the hymenoptera photos all decode"
            rate = loader_rate(root, contract, args.batch_size, args.batches, workers)
        row = {"files": n, "full_decode_1_thread_s": serial, "full_threads_s": full, "header_s": header,
               "speedup_header_vs_full_decode": serial / header, "loader_img_per_s": rate}
        report["sizes"].append(row)
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    lines = ["| files | full decode, 1 thread | --scan full, threads | --scan header | header speed-up | "
             "loader img/s | step img/s frozen | step img/s unfrozen |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["sizes"]:
        lines.append(f"| {row['files']:,} | {row['full_decode_1_thread_s']:.1f} s | {row['full_threads_s']:.1f} s | "
                     f"{row['header_s']:.2f} s | {row['speedup_header_vs_full_decode']:.0f}× | {row['loader_img_per_s']:.0f} | "
                     f"{steps['frozen']:.0f} | {steps['unfrozen']:.0f} |")
    table = "\n".join(lines)
    (args.out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
