"""Bundles changed the way a release pipeline bug or an attacker changes them (real ONNX edits, manifests
rewritten to match), for the signing, conformance and reload tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from edgeport.runtime.manifest import MANIFEST_NAME, sha256_file


def rehash_manifest(bundle: Path) -> None:
    """Rewrite the manifest's sha256 and size of every file it lists, so the sha256 check passes again."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    for name, entry in manifest["files"].items():
        entry.update(sha256=sha256_file(bundle / name), bytes=(bundle / name).stat().st_size)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def scale_weights(model_path: Path, factor: float = 1.01) -> None:
    """Still a valid ONNX file that loads and runs, but its largest weight tensor scaled by ``factor``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(model, str(model_path))


def relabel(bundle: Path, prefix: str) -> None:
    """Prefix every label (in the model's contract, labels.txt and the manifest): the same network, but
    each record says which bundle classified it. The manifest is rehashed; re-sign afterwards."""
    import onnx
    from edgeport.runtime.contract import METADATA_KEY

    model_path = bundle / "model.onnx"
    model = onnx.load(str(model_path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            contract = json.loads(prop.value)
            contract["labels"] = [prefix + label for label in contract["labels"]]
            prop.value = json.dumps(contract)
    onnx.save(model, str(model_path))
    labels = [prefix + line for line in (bundle / "labels.txt").read_text().splitlines()]
    (bundle / "labels.txt").write_text("\n".join(labels) + "\n")
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["contract"]["labels"] = [prefix + label for label in manifest["contract"]["labels"]]
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    rehash_manifest(bundle)
