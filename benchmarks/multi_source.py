"""Several file sources through one model (issue #18): total FPS and per-frame latency for 1, 2 and 4 sources.

    nice -n 19 python -m benchmarks.multi_source BUNDLE [--images 60] [--threads 2] [--batch 1 auto]

Each source is a list of ``--images`` hymenoptera val photos (a different slice per source), read, decoded and
preprocessed in its own thread (edge-predict's service mode); one inference loop classifies what is ready.
Latency per frame is its decode + preprocessing plus its share of the inference call (edge-predict's
``latency_ms``). Goal: 4 sources ≥ 1.6× the FPS of one source at batch 1, p90 ≤ 2× the one-source p90.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from edgeport.runtime import Classifier
from edgeport.runtime.frames import file_frames
from edgeport.runtime.inputs import expand_inputs
from edgeport.runtime.stream import SourceEvent, Stream, frames_source

from .common import hymenoptera_dir


def run(clf: Classifier, photos: list[Path], sources: int, per_source: int, batch: int | str) -> dict:
    ring = photos * (1 + sources * per_source // len(photos))  # wraps around when sources × images > the photos
    chunks = [ring[i * per_source:(i + 1) * per_source] for i in range(sources)]
    srcs = [frames_source(f"s{i}", file_frames(expand_inputs([str(p) for p in chunk]))) for i, chunk in enumerate(chunks)]
    latencies: list[float] = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for item in Stream(clf, srcs, top_k=1, batch=batch):
        if not isinstance(item, SourceEvent) and item.ok:
            latencies.append(item.latency_ms)
    seconds = time.perf_counter() - t0
    cores_busy = (time.process_time() - cpu0) / seconds  # this process's CPU time per second: 2.0 = both cores
    p50, p90 = np.percentile(latencies, [50, 90])
    return {"sources": sources, "batch": batch, "frames": len(latencies), "seconds": round(seconds, 2),
            "fps": round(len(latencies) / seconds, 1), "p50_ms": round(float(p50), 1), "p90_ms": round(float(p90), 1),
            "cores_busy": round(cores_busy, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--images", type=int, default=60, help="photos per source")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", nargs="+", default=["1", "auto"])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    photos = sorted((hymenoptera_dir() / "val").glob("*/*.jpg"))
    rows = []
    for batch in args.batch:
        clf = Classifier(args.bundle, threads=args.threads, batch_size=8)
        run(clf, photos, 1, 10, 1)  # warm-up: first inference, page cache
        for count in args.counts:
            row = run(clf, photos, count, args.images, batch if batch == "auto" else int(batch))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| sources | batch | frames | total FPS | FPS vs 1 source | p50 ms | p90 ms | p90 vs 1 source | cores busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["sources"] == 1 and r["batch"] == row["batch"])
        print(f"| {row['sources']} | {row['batch']} | {row['frames']} | {row['fps']} | {row['fps'] / base['fps']:.2f}× | "
              f"{row['p50_ms']} | {row['p90_ms']} | {row['p90_ms'] / base['p90_ms']:.2f}× | "
              f"{row['cores_busy']} / {os.cpu_count()} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
