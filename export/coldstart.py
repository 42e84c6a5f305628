"""Cold start and peak memory of ``edge-predict``, measured on a real child process.

Cold start is process start → first result line on stdout (interpreter start, imports, model load,
sha256 check, one image). Peak RSS is the child's ``ru_maxrss`` from ``os.wait4`` — the kernel's
own high-water mark for exactly that process (POSIX only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from edgeport.runtime.errors import EdgeportError

__all__ = ["measure_edge_predict"]


def _one_run(command: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    first_at = time.perf_counter()
    rest, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not first:
        raise EdgeportError(f"edge-predict failed during the cold-start measurement (exit {proc.returncode}): {err.strip()[-500:]}")
    del rest
    rss_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20  # KiB on Linux, bytes on macOS
    return (first_at - start) * 1e3, rss_mb


def measure_edge_predict(bundle: Path, format_name: str | None, image: Path, repeats: int,
                         threads: int | None = None) -> dict[str, float | int]:
    """Median cold start (ms) and peak RSS (MB) of ``edge-predict BUNDLE IMAGE`` over ``repeats`` runs."""
    command = [sys.executable, "-m", "edgeport.runtime.cli", str(bundle), str(image), "--format", "jsonl", "--top-k", "1"]
    if format_name:
        command += ["--model-format", format_name]
    if threads:
        command += ["--threads", str(threads)]
    runs = [_one_run(command) for _ in range(repeats)]
    return {"cold_start_ms": round(float(np.median([r[0] for r in runs])), 1),
            "peak_rss_mb": round(float(np.median([r[1] for r in runs])), 1), "runs": repeats}
