"""Write the conformance kit into the staging bundle (layout: ``edgeport.runtime.conformance``).

Reference photos are up to ``KIT_IMAGES`` of the verification images, spread over the list, downscaled
so the resize of the contract still has work to do and re-encoded as JPEG ≤ ``MAX_IMAGE_BYTES``. Their
input tensors come from the runtime's exact preprocessing; every format's logits from the runtime
itself. Tolerances are per format, from what this export measured:

- FP32: twice the max |Δlogit| export verification measured between PyTorch and the format (two float
  implementations of one network), at least verify's ``ATOL + RTOL·max|logit|``;
- reduced precision (INT8, FP16): the max |Δlogit| between the format and FP32 ONNX on the kit's own
  images (another CPU's integer kernels may round differently, by up to the quantization error itself);
- preprocessing: ``PREPROCESS_LEVELS`` 8-bit grey levels in normalized units (JPEG decoders may differ by one).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.conformance import KIT_DIR, KIT_NAME, KIT_SCHEMA_VERSION, calibration_of
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import ImageDecodeError, VerificationError
from edgeport.runtime.manifest import write_json
from edgeport.runtime.preprocess import load_image, preprocess
from PIL import Image

from .checks.verify import ATOL, RTOL

__all__ = ["KIT_IMAGES", "MAX_IMAGE_BYTES", "PREPROCESS_LEVELS", "write_conformance_kit"]

KIT_IMAGES = 8
MAX_IMAGE_BYTES = 30_000
PREPROCESS_LEVELS = 2
TOP_K = 5


def _spread(items: Sequence[Path], n: int) -> list[Path]:
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _reencode(src: Path, contract: PreprocessContract) -> bytes:
    """``src`` as a JPEG ≤ MAX_IMAGE_BYTES whose shorter side is 1.25× the contract's resize size (so the
    device's resize is exercised), at the highest quality that fits."""
    img = load_image(src)
    shorter = round(1.25 * (contract.resize_size if contract.center_crop else max(contract.input_size)))
    scale = shorter / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    for quality in range(90, 20, -5):
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= MAX_IMAGE_BYTES:
            return buffer.getvalue()
    raise VerificationError(f"{src} does not fit a {MAX_IMAGE_BYTES}-byte JPEG even at quality 25; pass other verification images")


def write_conformance_kit(staging: Path, formats: dict[str, dict[str, Any]], images: Sequence[Path],
                          verification: dict[str, Any], log: Callable[[str], Any] = lambda _: None) -> dict[str, Any]:
    """Write ``staging/conformance/`` for ``formats`` (name → manifest entry); returns the kit's summary."""
    kit = staging / KIT_DIR
    for sub in ("images", "inputs", "expected"):
        (kit / sub).mkdir(parents=True, exist_ok=True)
    fp32 = Classifier(staging / formats["onnx"]["file"], verify_key=False, unknown=False)
    contract = fp32.contract
    entries, inputs = [], []
    for path in _spread(images, KIT_IMAGES):
        try:
            data = _reencode(path, contract)
        except ImageDecodeError:
            continue  # the verification images may hold an undecodable file; the kit holds photos only
        i = len(entries)
        (kit / "images" / f"{i:02d}.jpg").write_bytes(data)
        tensor = preprocess(kit / "images" / f"{i:02d}.jpg", contract)
        np.save(kit / "inputs" / f"{i:02d}.npy", tensor, allow_pickle=False)
        inputs.append(tensor)
        entries.append({"image": f"images/{i:02d}.jpg", "input": f"inputs/{i:02d}.npy", "source": path.name, "bytes": len(data)})
    if not entries:
        raise VerificationError("no decodable verification image for the conformance kit; pass real images")
    batch = np.stack(inputs)
    reference = fp32.logits_from_tensor(batch)
    floor = ATOL + RTOL * float(np.abs(reference).max())
    kit_formats = {}
    for name, entry in formats.items():
        clf = fp32 if name == "onnx" else Classifier(staging / entry["file"], verify_key=False, unknown=False)
        logits = reference if name == "onnx" else clf.logits_from_tensor(batch)
        np.save(kit / "expected" / f"{name}.npy", logits.astype(np.float32), allow_pickle=False)
        if entry["precision"] == "fp32":
            measured = float(verification[name]["max_abs_logit_diff"])
            tolerance, basis = max(floor, 2 * measured), f"2 × max |Δlogit| vs PyTorch at export ({measured:.3g})"
        else:
            measured = float(np.abs(logits - reference).max())
            tolerance, basis = max(floor, measured), f"max |Δlogit| vs FP32 ONNX on the kit images at export ({measured:.3g})"
        kit_formats[name] = {
            "logits": f"expected/{name}.npy", "precision": entry["precision"], "backend": entry["backend"],
            "top_k": np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K].tolist(),
            "tolerance": {"max_abs_logit_diff": tolerance, "basis": basis, "floor": floor},
            "calibration": calibration_of(clf.contract),
        }
    pre_tol = PREPROCESS_LEVELS / (255.0 * min(contract.std))
    data = {
        "schema_version": KIT_SCHEMA_VERSION, "images": entries, "top_k": TOP_K,
        "preprocess": {"reference": "exact", "tolerance": pre_tol,
                       "basis": f"{PREPROCESS_LEVELS} 8-bit levels / (255 × min std)", "input_shape": list(batch.shape[1:])},
        "formats": kit_formats,
    }
    write_json(kit / KIT_NAME, data)
    log(f"conformance kit: {len(entries)} images (≤ {max(e['bytes'] for e in entries)} bytes each), "
        f"expected outputs for {', '.join(kit_formats)}")
    return {"dir": KIT_DIR, "schema_version": KIT_SCHEMA_VERSION, "images": len(entries),
            "tolerances": {n: f["tolerance"]["max_abs_logit_diff"] for n, f in kit_formats.items()}}
