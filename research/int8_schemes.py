"""onnx-int8's weight bit widths side by side: how much accuracy each choice keeps and what it costs
in latency, on photos the calibration never saw (why depthwise weights keep 8 bits on AVX2).

    python -m research.int8_schemes BUNDLE [--calib-size 100] [--threads 2] [--runs 100]

BUNDLE is an edge-export bundle with the ``onnx`` format. Every scheme is calibrated on the same
``--calib-size`` hymenoptera train photos edge-export would pick and scored by top-1 agreement with
the FP32 model on every other hymenoptera photo (val plus the unused train photos: 296 by default),
with and without bias correction, and — corrected — on the photos where FP32 is not hesitating (its
top-1 probability leads the second by ≥ ``CONFIDENT_LEAD``); then the corrected models and FP32 are
timed at batch 1 in one settled, interleaved run (``edgeport.export.timing``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from edgeport.export.formats.calibration import select_calibration_images
from edgeport.export.formats.int8_scheme import Int8Scheme, choose_scheme
from edgeport.export.formats.onnx_int8 import quantize_onnx
from edgeport.export.timing import time_interleaved
from edgeport.runtime import Classifier
from edgeport.runtime.classifier import softmax
from edgeport.runtime.inputs import iter_image_files
from edgeport.runtime.preprocess import preprocess_files

from .common import bundle_parser, hymenoptera_dir

CONFIDENT_LEAD = 0.1
#: label → (scheme, depthwise weights at 8 bits)
SCHEMES: dict[str, tuple[Int8Scheme, bool]] = {
    "U8S8, 7-bit weights everywhere (reduce_range)": (choose_scheme("avx2"), False),
    "U8S8, 7-bit GEMM weights, 8-bit depthwise (edgeport on AVX2)": (choose_scheme("avx2"), True),
    "U8U8, 8-bit weights everywhere": (Int8Scheme("avx2", "uint8", "uint8", False, "8-bit unsigned weights"), True),
    "U8S8, 8-bit weights everywhere (edgeport on VNNI)": (choose_scheme("vnni"), True),
}


def main() -> None:
    parser = bundle_parser(__doc__, runs=100)
    parser.add_argument("--calib-size", type=int, default=100)
    args = parser.parse_args()
    data = hymenoptera_dir()
    fp32 = Classifier(args.bundle, exact_preprocess=True, threads=args.threads)
    calib = select_calibration_images(data / "train", args.calib_size)
    calibrated = set(calib)
    held_out = [p for p in iter_image_files(data / "val") + iter_image_files(data / "train")
                if p not in calibrated and p.suffix.lower() == ".jpg"]  # train/ants' placeholder GIF is no photo
    images, kept, _ = preprocess_files(held_out, fp32.contract)
    logits = fp32.logits_from_tensor(images)
    reference = logits.argmax(1)
    probabilities = np.sort(softmax(logits), axis=1)
    confident = probabilities[:, -1] - probabilities[:, -2] >= CONFIDENT_LEAD
    one = images[:1]
    runners = {"FP32": lambda: fp32.logits_from_tensor(one)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeport-schemes-") as tmp:
        for number, (label, (scheme, depthwise_8bit)) in enumerate(SCHEMES.items()):
            agreement = []
            for corrected in (False, True):
                path = Path(tmp) / f"{number}-{corrected}.onnx"
                quantize_onnx(args.bundle / "model.onnx", path, fp32.contract, calib, scheme,
                              bias_correction=corrected, depthwise_8bit=depthwise_8bit)
                int8 = Classifier(path, exact_preprocess=True, threads=args.threads, unknown=False)
                same = int8.logits_from_tensor(images).argmax(1) == reference
                agreement.append(100 * float(np.mean(same)))
            agreement.append(100 * float(np.mean(same[confident])))  # the corrected model, the last one built
            runners[label] = (lambda model: lambda: model.logits_from_tensor(one))(int8)
            rows.append((label, *agreement))
        samples = time_interleaved(runners, runs=args.runs)
    base = samples.p50_ms("FP32")
    print(f"{len(kept)} held-out photos, {len(calib)} calibration photos, {args.threads} threads; "
          f"FP32 p50 {base:.2f} ms; FP32 leads by ≥ {CONFIDENT_LEAD} on {int(confident.sum())} photos\n")
    print("| scheme | agreement % | with bias correction % | the same where FP32 leads % | p50 ms | ×FP32 |\n"
          "|---|---|---|---|---|---|")
    for label, plain, corrected, on_confident in rows:
        p50 = samples.p50_ms(label)
        print(f"| {label} | {plain:.2f} | {corrected:.2f} | {on_confident:.2f} | {p50:.2f} | {p50 / base:.2f} |")


if __name__ == "__main__":
    main()
