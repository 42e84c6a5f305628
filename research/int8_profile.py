"""Where onnxruntime spends a batch-1 call, FP32 against INT8, by kind of operator: which layers
INT8 speeds up on this CPU and which it does not (onnxruntime's own profiler, per kernel).

    python -m research.int8_profile BUNDLE [--threads 2] [--runs 60]

BUNDLE is an edge-export bundle with ``onnx`` and ``onnx-int8``. Convolutions are split into
depthwise (``group`` > 1) and the rest; times are per call, with profiling on (so a little above the
unprofiled latency).
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from edgeport.export.formats.int8_graph import conv_group

from .common import bundle_parser


def profile_ms(model: Path, threads: int, runs: int) -> dict[str, float]:
    import onnx
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")  # the graph that really runs
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        groups = {n.name: conv_group(n) for n in onnx.load(options.optimized_model_filepath).graph.node}
        name = session.get_inputs()[0].name
        for _ in range(runs + 1):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    # The first call allocates and picks kernels: leave out every node event until it has ended.
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    events = [e for e in events if e["ts"] >= first["ts"] + first["dur"]]
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            op = event["args"]["op_name"]
            kind = f"{op} depthwise" if groups.get(node, 1) > 1 else op
            totals[kind] += event["dur"] / 1000 / runs
    return dict(totals.most_common())


def main() -> None:
    args = bundle_parser(__doc__, runs=60).parse_args()
    for label, file in (("FP32", "model.onnx"), ("INT8", "model.int8.onnx")):
        times = profile_ms(args.bundle / file, args.threads, args.runs)
        print(f"{label}: {sum(times.values()):.2f} ms per call")
        for kind, ms in list(times.items())[:6]:
            print(f"  {ms:6.3f} ms  {kind}")


if __name__ == "__main__":
    main()
