"""``export_bundle``: checkpoint → verified ONNX → bundle with labels and manifest."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgeport.runtime.bundle import LABELS_NAME, MANIFEST_NAME
from edgeport.runtime.cpu import cpu_info

from .bundle import file_entries, staging_bundle, write_json
from .onnx import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
from .sources import load_source
from .verify import verify_parity

__all__ = ["export_bundle", "MANIFEST_SCHEMA_VERSION"]

MANIFEST_SCHEMA_VERSION = 1
_LIBRARIES = ("edgeport", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "numpy", "pillow")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def export_bundle(
    source: str, out_dir: str | Path, weights: str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Export ``source`` (a ``best.pt`` or ``torchvision:<name>``) to ``out_dir``; returns the manifest.

    Raises ``VerificationError`` (and writes nothing) when the ONNX model disagrees with PyTorch.
    """
    out_dir = Path(out_dir)
    src = load_source(source, weights=weights)
    log(f"exporting {source} ({len(src.contract.labels)} classes, input {src.contract.input_size}) to ONNX …")
    with staging_bundle(out_dir) as staging:
        model_path = staging / "model.onnx"
        export_onnx(src.model, src.contract, model_path)
        log(f"verifying against PyTorch on {len(src.verify_images)} real images …")
        parity = verify_parity(src.model, model_path, src.verify_images)
        (staging / LABELS_NAME).write_text("\n".join(src.contract.labels) + "\n", encoding="utf-8")
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "name": src.name,
            "contract": src.contract.to_dict(),
            "formats": {
                "onnx": {"file": model_path.name, "precision": "fp32", "opset": OPSET,
                         "input": INPUT_NAME, "output": OUTPUT_NAME},
            },
            "files": file_entries(staging),
            "source": src.provenance,
            "verification": {"onnx": parity.to_dict()},
            "versions": _versions(),
            "cpu": cpu_info(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        }
        write_json(staging / MANIFEST_NAME, manifest)
    log(
        f"ok: {parity.images} images, top-1 agreement {parity.top1_agreement:.2%}, "
        f"max |Δlogit| {parity.max_abs_logit_diff:.2e} → {out_dir}"
    )
    return manifest
