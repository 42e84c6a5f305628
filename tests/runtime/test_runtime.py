"""The torch-free runtime on real exported models."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from edgeport.runtime import Classifier, ContractError, IntegrityError, ModelLoadError
from edgeport.runtime.contract import METADATA_KEY
from PIL import Image

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "lynx"}


def test_imagenet_model_recognises_the_cat_photo(imagenet_bundle, sample_photos):
    clf = Classifier(imagenet_bundle)
    assert len(clf.labels) == 1000 and clf.labels[281] == "tabby"
    chelsea = next(p for p in sample_photos if p.name == "chelsea.png")
    pred = clf.predict(chelsea, top_k=5)
    assert len(pred.top) == 5 and pred.top[0][1] >= pred.top[-1][1]
    assert pred.label in CAT_CLASSES
    coffee = next(p for p in sample_photos if p.name == "coffee.png")
    assert {"espresso", "cup", "coffee mug"} & {label for label, _ in clf.predict(coffee).top}


def test_scores_are_probabilities_for_every_input_kind(imagenet_bundle, sample_photos):
    clf = Classifier(imagenet_bundle, threads=1, batch_size=3)
    path = sample_photos[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    scores = clf.scores([path, path.read_bytes(), Image.open(path), rgb], color="rgb")
    assert scores.shape == (4, 1000)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, np.repeat(scores[:1], 4, axis=0), atol=1e-6)


def test_bare_onnx_file_works_without_the_bundle(imagenet_bundle, tmp_path, sample_photos):
    lone = tmp_path / "lone.onnx"
    shutil.copy(imagenet_bundle / "model.onnx", lone)
    clf = Classifier(lone)
    assert clf.manifest is None and clf.labels == Classifier(imagenet_bundle).labels
    assert clf.predict(sample_photos[0]).label == Classifier(imagenet_bundle).predict(sample_photos[0]).label


def test_a_tampered_bundle_is_refused(imagenet_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(imagenet_bundle, bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the weights
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        Classifier(bundle)
    with pytest.raises(IntegrityError):  # the file alone is still checked against its manifest
        Classifier(bundle / "model.onnx")


def test_a_model_without_the_contract_is_refused(imagenet_bundle, tmp_path):
    proto = onnx.load(imagenet_bundle / "model.onnx")
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    bare = tmp_path / "no_contract.onnx"
    onnx.save(proto, bare)
    with pytest.raises(ContractError, match="carries no preprocessing contract.*edge-export"):
        Classifier(bare)


def test_missing_model_and_wrong_file_type(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Classifier(tmp_path / "nope")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a model file the runtime opens"):
        Classifier(tmp_path / "model.pt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        Classifier(tmp_path / "dir")


def test_manifest_lists_every_file_with_its_sha256(imagenet_bundle):
    manifest = json.loads((imagenet_bundle / "manifest.json").read_text())
    kit = {f for f in manifest["files"] if f.startswith("conformance/")}  # the self-test kit (docs/fleet-updates.md)
    assert set(manifest["files"]) - kit == {"model.onnx", "labels.txt"} and "conformance/kit.json" in kit
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (imagenet_bundle / name).stat().st_size
    assert manifest["contract"]["labels"][281] == "tabby"
    assert manifest["verification"]["onnx"]["top1_agreement"] == 1.0
    assert (imagenet_bundle / "labels.txt").read_text().splitlines() == manifest["contract"]["labels"]


def test_runtime_predicts_with_torch_made_impossible(imagenet_bundle, sample_photos):
    """A device has no torch: block its import outright and run the whole runtime path."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("torch", "torchvision", "onnx"):
            sys.modules[name] = None  # any `import torch` now raises ImportError
        from edgeport.runtime import Classifier
        from edgeport.runtime.cli import main
        pred = Classifier({str(imagenet_bundle)!r}).predict({str(sample_photos[0])!r})
        assert not any(m in sys.modules and sys.modules[m] is not None for m in ("torch", "torchvision"))
        print("TOP1", pred.label)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TOP1" in out.stdout


def test_bundle_format_and_backend_selection_errors(imagenet_bundle):
    with pytest.raises(ModelLoadError, match="no format 'onnx-int8'"):
        Classifier(imagenet_bundle, format="onnx-int8")
    with pytest.raises(ModelLoadError, match="no format for backend 'openvino'"):
        Classifier(imagenet_bundle, backend="openvino")
    with pytest.raises(ModelLoadError, match="runs on onnxruntime, not openvino"):
        Classifier(imagenet_bundle / "model.onnx", backend="openvino")
