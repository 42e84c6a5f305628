"""Cold start and peak memory of ``edge-predict``, measured on a real child process.

Cold start is process start → first result line on stdout (interpreter start, imports, model load,
sha256 check, one image). Peak RSS is the child's own ``VmHWM`` from ``/proc/self/status``, read as
it exits. Not ``ru_maxrss`` from ``wait4``: Linux carries the high-water mark of the forking parent
(here a process holding torch and five models) across ``exec``, which made every format read ~1.5 GB.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from edgeport.runtime.errors import EdgeportError

__all__ = ["measure_edge_predict", "PEAK_RSS_MARKER"]

PEAK_RSS_MARKER = "edgeport-peak-rss-kib:"

# edge-predict's own main, plus one exit hook that reports this process's peak RSS on stderr.
_LAUNCHER = f"""
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("{PEAK_RSS_MARKER}", line.split()[1], file=sys.stderr, flush=True)
atexit.register(_peak)
sys.argv[0] = "edge-predict"
from edgeport.runtime.cli import main
main()
"""


def _one_run(command: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    first_at = time.perf_counter()
    _, err = proc.communicate()
    if proc.returncode != 0 or not first:
        raise EdgeportError(f"edge-predict failed during the cold-start measurement (exit {proc.returncode}): {err.strip()[-500:]}")
    peaks = [line.split()[-1] for line in err.splitlines() if line.startswith(PEAK_RSS_MARKER)]
    if not peaks:
        raise EdgeportError("edge-predict's peak RSS could not be read: /proc/self/status is Linux-only; run with --cold-starts 0 here")
    return (first_at - start) * 1e3, int(peaks[-1]) / 1024


def measure_edge_predict(bundle: Path, format_name: str | None, inputs: Path | list[Path], repeats: int,
                         threads: int | None = None) -> dict[str, float | int]:
    """Median cold start (ms) and peak RSS (MB) of ``edge-predict BUNDLE INPUTS…`` over ``repeats`` runs."""
    paths = inputs if isinstance(inputs, list) else [inputs]
    command = [sys.executable, "-c", _LAUNCHER, str(bundle), *map(str, paths), "--format", "jsonl", "--top-k", "1"]
    if format_name:
        command += ["--model-format", format_name]
    if threads:
        command += ["--threads", str(threads)]
    runs = [_one_run(command) for _ in range(repeats)]
    return {"cold_start_ms": round(float(np.median([r[0] for r in runs])), 1),
            "peak_rss_mb": round(float(np.median([r[1] for r in runs])), 1), "runs": repeats}
