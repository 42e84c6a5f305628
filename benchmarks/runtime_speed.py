"""edge-predict's speed targets (issue #6), measured side by side in one run; prints a hit/miss table.

    python benchmarks/runtime_speed.py [--bundle NAME=DIR ...] [--data DIR]

Without ``--bundle`` it exports torchvision's ImageNet MobileNetV2 (needs the ``train`` extra) into
a temporary folder. ``--data`` is a folder of photos (default: the hymenoptera data set next to the
repository); every image in it goes into the fast-vs-exact top-1 agreement.

Targets: preprocessing ≤ 2.5 ms per ~500×375 JPEG; end-to-end per image ≤ 1.5 × the model's own
inference time (end-to-end: a folder of photos through the one stream loop, ``classify_stream`` at batch 1 as
``edge-predict classify`` runs it, wall time per photo; the source thread decodes the next photo while the model
runs, so this approaches the slower of the two stages rather than their sum; one photo at a time through
``Classifier.predict``, which cannot overlap, is printed beside it); cold start (process start → first result printed) ≤ 0.5 s; peak RSS ≤ 150 MB;
fast-path top-1 agreement with the exact contract path ≥ 99.5%.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from edgeport.export.bench.coldstart import measure_edge_predict
from edgeport.runtime import Classifier
from edgeport.runtime.errors import ImageDecodeError
from edgeport.runtime.frames import file_frames
from edgeport.runtime.inputs import InputItem, iter_image_files
from edgeport.runtime.preprocess import preprocess, preprocess_fast
from edgeport.runtime.stream import classify_stream

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_ms(fn, items, repeats: int = 3) -> float:
    """Median per-item time of ``fn(item)`` over ``repeats`` passes (the first pass warms caches)."""
    times = []
    for _ in range(repeats):
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def agreement(clf: Classifier, files: list[Path]) -> tuple[float, list[str], np.ndarray, list[Path]]:
    """Fast-vs-exact top-1 agreement, the files whose top-1 flips, each file's max |Δlogit|, files used."""
    exact, fast, kept = [], [], []
    for path in files:
        try:
            exact.append(preprocess(path, clf.contract))
            fast.append(preprocess_fast(path, clf.contract))
            kept.append(path)
        except ImageDecodeError:
            continue
    le, lf = clf.logits_from_tensor(np.stack(exact)), clf.logits_from_tensor(np.stack(fast))
    flips = [str(kept[i]) for i in np.flatnonzero(le.argmax(1) != lf.argmax(1))]
    return 1 - len(flips) / len(kept), flips, np.abs(le - lf).max(axis=1), kept


def export_imagenet(tmp: Path) -> Path:
    from edgeport.export import export_bundle

    out = tmp / "mobilenet_v2"
    export_bundle("torchvision:mobilenet_v2", out, log=lambda _: None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR",
                        help="a model to measure (repeatable); the first one also gives the speed figures")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hymenoptera")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgeport-bench-"))
    try:
        bundles = dict(b.split("=", 1) for b in args.bundle) or {"imagenet-mobilenet_v2": str(export_imagenet(tmp))}
        files = iter_image_files(args.data)
        jpegs = [p for p in files if p.suffix.lower() in (".jpg", ".jpeg")]
        typical = [p for p in jpegs if 450 <= _size(p)[0] <= 550][:100]  # the ~500×375 photos
        rows = []
        for i, (name, path) in enumerate(bundles.items()):
            clf = Classifier(path, threads=args.threads)
            agree, flips, dlogit, kept = agreement(clf, files)
            rows.append((f"fast-path top-1 agreement, {name} ({len(kept)} photos)", ">= 99.5%", f"{agree:.2%}",
                         agree >= 0.995))
            worst = ", ".join(f"{kept[j].name} {_size(kept[j])} {dlogit[j]:.3f}" for j in np.argsort(-dlogit)[:3])
            print(f"{name}: top-1 flips {flips or 'none'}; per-photo max |Δlogit| fast vs exact: "
                  f"median {np.median(dlogit):.3f}, largest: {worst}")
            if i:
                continue
            fast_ms = median_ms(lambda p: preprocess_fast(p, clf.contract), typical)
            exact_ms = median_ms(lambda p: preprocess(p, clf.contract), typical)
            decode_ms = median_ms(_decode_only, typical)  # the floor: Pillow's libjpeg-turbo decode at full size
            tensor = preprocess_fast(typical[0], clf.contract)[None]
            infer_ms = median_ms(lambda _: clf.logits_from_tensor(tensor), range(len(typical)))
            sequential_ms = median_ms(lambda p: clf.predict(p), typical)
            e2e_ms = stream_ms(clf, typical)
            start = measure_edge_predict(Path(path), None, typical[0], repeats=5)
            start_s = start["cold_start_ms"] / 1e3
            folder = args.data / "val" if (args.data / "val").is_dir() else args.data
            start_rss, stream_rss = start["peak_rss_mb"], measure_edge_predict(Path(path), None, folder, repeats=1)["peak_rss_mb"]
            rows += [
                (f"preprocess per ~500x375 JPEG, fast (exact: {exact_ms:.2f} ms; decode alone: {decode_ms:.2f} ms)",
                 "<= 2.5 ms", f"{fast_ms:.2f} ms",
                 fast_ms <= 2.5),
                (f"end-to-end per image, streamed / inference ({e2e_ms:.2f} / {infer_ms:.2f} ms; one at a time "
                 f"{sequential_ms:.2f} ms)", "<= 1.5x",
                 f"{e2e_ms / infer_ms:.2f}x", e2e_ms / infer_ms <= 1.5),
                ("cold start: process start -> first result", "<= 0.5 s", f"{start_s:.2f} s", start_s <= 0.5),
                (f"peak RSS, one image / a {len(iter_image_files(folder))}-photo folder", "<= 150 MB", f"{start_rss:.0f} / {stream_rss:.0f} MB",
                 max(start_rss, stream_rss) <= 150),
            ]
        print(f"\n{cpu_model()}, {os.cpu_count()} cores, {args.threads} inference threads, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
        width = max(len(r[0]) for r in rows)
        print(f"{'target':<{width}}  {'goal':>9}  {'measured':>14}  result")
        for what, goal, value, hit in rows:
            print(f"{what:<{width}}  {goal:>9}  {value:>14}  {'hit' if hit else 'MISS'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stream_ms(clf: Classifier, photos: list[Path], repeats: int = 3) -> float:
    """Wall time per photo of the photos streamed through the one loop (the median of ``repeats`` passes), with the
    records checked: every photo classified, in order."""
    items = [InputItem(str(p)) for p in photos]
    passes = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = list(classify_stream(clf, file_frames(items), top_k=5))
        passes.append((time.perf_counter() - t0) * 1000 / len(photos))
        assert [r.source for r in results] == [str(p) for p in photos] and all(r.ok for r in results)
    return statistics.median(passes)


def _decode_only(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.load()


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


if __name__ == "__main__":
    main()
