"""OpenVINO FP32 against onnxruntime FP32, batch 1, under the CPU plugin settings that matter, and
where OpenVINO's time goes (its per-layer ``PERF_COUNT``, summed by kernel).

    python -m research.openvino_config BUNDLE [--threads 2] [--runs 100]

BUNDLE is an edge-export bundle with ``onnx`` and ``openvino`` formats. Every configuration is timed
in the same run with ``edgeport.export.timing`` (settled blocks), so the ratios are comparable.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
from edgeport.export.timing import percentiles_ms, time_interleaved

from .common import bundle_parser


def _openvino_runner(core, xml: Path, config: dict, static: bool, x: np.ndarray):
    model = core.read_model(str(xml))
    if static:
        model.reshape({model.inputs[0]: list(x.shape)})
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer({0: x}), request


def main() -> None:
    args = bundle_parser(__doc__, runs=100).parse_args()

    import onnxruntime as ort
    import openvino as ov

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    core, xml = ov.Core(), args.bundle / "openvino" / "model.xml"
    ours = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": args.threads}
    configs = {
        "openvino defaults, dynamic batch": ({}, False),
        "openvino defaults, static shape": ({}, True),
        "edgeport settings, dynamic batch": (ours, False),
        "edgeport settings, static shape (the runtime)": (ours, True),
        "edgeport settings, static, threads unpinned": ({**ours, "ENABLE_CPU_PINNING": False}, True),
    }
    runners = {"onnxruntime": lambda: session.run(None, {name: x})}
    for label, (config, static) in configs.items():
        runners[label] = _openvino_runner(core, xml, config, static, x)[0]
    samples = time_interleaved(runners, runs=args.runs, warmup=5)
    base = samples.p50_ms("onnxruntime")
    width = max(map(len, runners))
    print(f"{'configuration':<{width}}  p50 ms  p90 ms  ×onnxruntime")
    for label in runners:
        p = percentiles_ms(samples.seconds[label])
        print(f"{label:<{width}}  {p['p50']:6.2f}  {p['p90']:6.2f}  {p['p50'] / base:11.2f}")

    run, request = _openvino_runner(core, xml, {**ours, "PERF_COUNT": True}, True, x)
    for _ in range(50):
        run()
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for layer in request.profiling_info:
        key = f"{layer.node_type} [{layer.exec_type}]"
        totals[key] += layer.real_time.total_seconds() * 1e3
        counts[key] += 1
    total = sum(totals.values())
    print(f"\nOpenVINO per-layer time of the last call, by kernel (total {total:.2f} ms with profiling on):")
    for key, ms in totals.most_common(8):
        print(f"  {ms:6.2f} ms  {ms / total:5.1%}  {counts[key]:3d} × {key}")


if __name__ == "__main__":
    main()
