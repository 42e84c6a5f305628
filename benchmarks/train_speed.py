"""``python -m benchmarks.train_speed [DATA_DIR]``: what each CPU training lever buys, side by side in one process.

Per image, on real photos (``DATA_DIR/train``, clothing by default): decoding the JPEG, the eval crop and the training
augmentation from the file, the same from the decode cache; and for MobileNetV2 and EfficientNet-Lite0 the training
step (forward, backward, AdamW) and the eval forward pass at batch 16 in the default memory layout, in channels_last,
and in channels_last under bfloat16 autocast. The variants run interleaved over ``--rounds`` rounds and the median
is reported, so a neighbour's load shifts them alike; the ratios are the result, the milliseconds depend on the
machine. The CPU's model and the flags that matter are written with them. bfloat16 on a CPU without AVX512_BF16/AMX
is emulated: the row says so (``edge-train`` turns it on only where it is native, ``devices.choose_precision``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from edgeport.runtime.preprocess import load_image
from edgeport.trainer.augment import train_transforms
from edgeport.trainer.decode_cache import DecodeCache
from edgeport.trainer.devices import BF16_CPU_FLAGS, cpu_flags
from edgeport.trainer.lite0 import build_lite0
from edgeport.trainer.models import arch_contract, build_pretrained
from edgeport.trainer.transforms import eval_geometry, eval_to_input, eval_transform

from .common import REPO

CLOTHING = REPO.parent / "shared" / "data" / "clothing"
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = cpu_flags()
    return f"{model}, {torch.get_num_threads()} threads; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}"
                                                                       for f in SHOWN_FLAGS)


def _median_ms(fn: Callable[[], object], per: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3 / per)
    return times


def image_costs(files: list[Path], rounds: int) -> dict[str, float]:
    contract = arch_contract("mobilenet_v2")
    train_tf, _ = train_transforms(contract, "light")
    evaluate = eval_transform(contract)
    cache = DecodeCache(1 << 40, eval_geometry(contract), print)
    for f in files:
        cache.source(f)
        cache.eval_image(f)
    to_input = eval_to_input(contract)
    variants = {
        "decode (load_image)": lambda: [load_image(f) for f in files],
        "eval transform from the file": lambda: [evaluate(load_image(f)) for f in files],
        "eval transform from the cache": lambda: [to_input(cache.eval_image(f)) for f in files],
        "train augmentation from the file": lambda: [train_tf(load_image(f)) for f in files],
        "train augmentation from the cache": lambda: [train_tf(cache.source(f)) for f in files],
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name] += _median_ms(fn, len(files), 1)
    return {name: statistics.median(t) for name, t in samples.items()}


def model_costs(arch: str, rounds: int, batch: int) -> dict[str, float]:
    model = build_lite0() if arch == "efficientnet_lite0" else build_pretrained(arch)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    native = bool(BF16_CPU_FLAGS & cpu_flags())
    variants = {"default layout, float32": (torch.contiguous_format, False),
                "channels_last, float32": (torch.channels_last, False),
                f"channels_last, bfloat16 ({'native' if native else 'emulated'})": (torch.channels_last, True)}

    def step(fmt: torch.memory_format, bf16: bool) -> None:
        model.train()
        model.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=fmt)), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    @torch.no_grad()
    def forward(fmt: torch.memory_format, bf16: bool) -> None:
        model.eval()
        model.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x.contiguous(memory_format=fmt))

    samples: dict[str, list[float]] = {}
    for kind, fn in (("train step", step), ("eval forward", forward)):
        for fmt, bf16 in variants.values():
            fn(fmt, bf16)  # warm-up: oneDNN picks and caches its kernels
        for _ in range(rounds):
            for name, (fmt, bf16) in variants.items():
                samples.setdefault(f"{arch} {kind}, {name}", []).extend(_median_ms(lambda: fn(fmt, bf16), batch, 1))
    return {name: statistics.median(t) for name, t in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=CLOTHING, help="a folder with train/<class>/ photos")
    parser.add_argument("--images", type=int, default=64, help="photos timed per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "benchmarks" / "train_speed")
    args = parser.parse_args()
    files = sorted(p for p in (args.data / "train").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[:: max(1, len(files) // args.images)][: args.images]
    report = {"cpu": cpu_line(), "images": image_costs(files, args.rounds)}
    for arch in ("mobilenet_v2", "efficientnet_lite0"):
        report[arch] = model_costs(arch, args.rounds, args.batch_size)
    lines = [f"CPU: {report['cpu']}", "", "| what | ms per image | × the first row of its group |", "|---|---:|---:|"]
    for group in ("images", "mobilenet_v2", "efficientnet_lite0"):
        rows = list(report[group].items())
        bases = {}
        for name, ms in rows:
            key = name.split(",")[0] if group != "images" else name.split(" from ")[0]
            base = bases.setdefault(key, ms)
            lines.append(f"| {name} | {ms:.1f} | ×{ms / base:.2f} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
