"""The kit writer on a checkpoint-sized verification set: 8 photos spread over it, each ≤ 30 KB."""

from __future__ import annotations

import io
import shutil

from edgeport.export.conformance import KIT_IMAGES, MAX_IMAGE_BYTES, write_conformance_kit
from edgeport.runtime.conformance import read_kit
from edgeport.runtime.formats import DEPLOY_FORMATS
from PIL import Image


def test_eight_photos_spread_over_the_verification_images(imagenet_bundle, hymenoptera_val_jpegs, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    shutil.copy(imagenet_bundle / "model.onnx", staging / "model.onnx")
    fmt = DEPLOY_FORMATS["onnx"]
    entries = {"onnx": {"file": fmt.file, "files": fmt.files, "backend": fmt.backend, "precision": fmt.precision}}
    summary = write_conformance_kit(staging, entries, hymenoptera_val_jpegs, {"onnx": {"max_abs_logit_diff": 1e-5}})
    assert summary["images"] == KIT_IMAGES == 8
    shutil.copy(imagenet_bundle / "manifest.json", staging / "manifest.json")  # read_kit needs only the kit itself
    kit = read_kit(staging)
    sources = [item["source"] for item in kit.data["images"]]
    # Spread over the sorted list: the first and the last file, both classes (ants sort before bees).
    assert sources[0] == hymenoptera_val_jpegs[0].name and sources[-1] == hymenoptera_val_jpegs[-1].name
    assert {p.parent.name for p in hymenoptera_val_jpegs if p.name in sources} == {"ants", "bees"}
    by_name = {p.name: p for p in hymenoptera_val_jpegs}
    for data, source in zip(kit.images, sources):
        assert len(data) <= MAX_IMAGE_BYTES
        # Downscaled to 1.25 × the contract's resize (256), so the device's resize still has work to do; never upscaled.
        assert min(Image.open(io.BytesIO(data)).size) == min(round(1.25 * 256), min(Image.open(by_name[source]).size))
    assert kit.inputs.shape == (8, 3, 224, 224)
