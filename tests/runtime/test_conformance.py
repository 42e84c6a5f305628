"""The conformance kit: its files are what they claim to be, and the self-test catches a runtime, a model or
a preprocessing path that does not reproduce the export (real bundle, real onnxruntime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgeport.runtime import Classifier
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.conformance import KIT_DIR, KIT_NAME, KIT_SCHEMA_VERSION, read_kit, self_test
from edgeport.runtime.errors import ConformanceError, ExitCode, IntegrityError
from edgeport.runtime.manifest import MANIFEST_NAME, sha256_file
from edgeport.runtime.preprocess import preprocess
from PIL import Image

from ..bundles import rehash_manifest, scale_weights


@pytest.fixture
def bundle(imagenet_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(imagenet_bundle, copy)
    return copy


def _kit_json(bundle: Path) -> dict:
    return json.loads((bundle / KIT_DIR / KIT_NAME).read_text())


def _write_kit_json(bundle: Path, data: dict, rehash: bool = True) -> None:
    """Edit kit.json; ``rehash`` also rewrites its manifest entry (what a tamperer without the signing key can do)."""
    path = bundle / KIT_DIR / KIT_NAME
    path.write_text(json.dumps(data))
    if rehash:
        manifest = json.loads((bundle / MANIFEST_NAME).read_text())
        manifest["files"][f"{KIT_DIR}/{KIT_NAME}"] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_kit_files_are_what_the_layout_says(imagenet_bundle):
    kit = read_kit(imagenet_bundle)
    data = kit.data
    assert data["schema_version"] == KIT_SCHEMA_VERSION and 1 <= len(data["images"]) <= 8
    clf = Classifier(imagenet_bundle)
    for item, tensor in zip(data["images"], kit.inputs):
        image = imagenet_bundle / KIT_DIR / item["image"]
        assert image.stat().st_size <= 30_000 and Image.open(image).format == "JPEG"
        # Resized by the contract (not already at its resize size), and the stored tensor is its exact preprocessing.
        assert min(Image.open(image).size) > clf.contract.resize_size
        np.testing.assert_array_equal(preprocess(image, clf.contract), tensor)
        assert tensor.dtype == np.float32 and tensor.shape == (3, *clf.contract.input_size)
    expected, entry = kit.expected("onnx")
    assert expected.shape == (len(kit.inputs), clf.contract.num_classes)
    assert entry["top_k"] == np.argsort(-expected, axis=1, kind="stable")[:, :data["top_k"]].tolist()
    # The FP32 tolerance comes from what export verification measured against PyTorch.
    measured = json.loads((imagenet_bundle / "manifest.json").read_text())["verification"]["onnx"]["max_abs_logit_diff"]
    assert entry["tolerance"]["max_abs_logit_diff"] == max(entry["tolerance"]["floor"], 2 * measured)


def test_self_test_passes_on_the_exporting_runtime(imagenet_bundle):
    result = self_test(Classifier(imagenet_bundle))
    assert result.passed, result.failures
    assert result.format == "onnx" and result.top1_agreement == 1.0
    assert result.max_abs_logit_diff <= result.logit_tolerance and result.preprocess_max_abs_diff <= result.preprocess_tolerance
    cli = CliRunner().invoke(predict_main, [str(imagenet_bundle), "--self-test", "--output-format", "jsonl"])
    assert cli.exit_code == ExitCode.OK, cli.output
    report = json.loads(cli.stdout)
    assert report["passed"] and [f["format"] for f in report["formats"]] == ["onnx"]
    table = CliRunner().invoke(predict_main, [str(imagenet_bundle), "--self-test"])
    assert table.exit_code == 0 and "PASS" in table.stdout and "max |Δlogit|" in table.stdout


def test_self_test_fails_when_the_model_does_not_reproduce_the_export(bundle):
    scale_weights(bundle / "model.onnx", 1.05)  # a runtime or a model that computes something else
    rehash_manifest(bundle)  # the sha256 check passes: only the self-test can tell
    result = self_test(Classifier(bundle))
    assert not result.passed and result.max_abs_logit_diff > result.logit_tolerance
    cli = CliRunner().invoke(predict_main, [str(bundle), "--self-test"])
    assert cli.exit_code == ExitCode.SELF_TEST_FAILED == 3  # as VERIFICATION: this runtime does not reproduce the export
    assert "FAIL" in cli.stdout and "exceeds the tolerance" in cli.stdout


def test_self_test_reports_a_top1_flip(bundle):
    path = bundle / KIT_DIR / "expected" / "onnx.npy"
    logits = np.load(path)
    logits[0] = logits[0][::-1].copy()  # the export's answer for image 00 was a different class
    np.save(path, logits)
    rehash_manifest(bundle)
    result = self_test(Classifier(bundle))
    assert not result.passed and any("top-1 changed on images/00.jpg" in f for f in result.failures)
    assert result.top1_agreement < 1.0


def test_self_test_catches_a_preprocessing_difference(bundle):
    image = bundle / KIT_DIR / "images" / "00.jpg"
    Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image, quality=90)  # not the photo the tensor came from
    rehash_manifest(bundle)
    result = self_test(Classifier(bundle))
    assert not result.passed and result.preprocess_max_abs_diff > result.preprocess_tolerance
    assert any("preprocessing" in f for f in result.failures)


def test_a_kit_cannot_point_outside_the_bundle_or_be_newer_than_the_runtime(bundle):
    data = _kit_json(bundle)
    data["images"][0]["input"] = "../../manifest.json"
    _write_kit_json(bundle, data)
    with pytest.raises(ConformanceError, match="leaves the kit"):
        read_kit(bundle)
    data["images"][0]["input"] = "inputs/00.npy"
    data["schema_version"] = KIT_SCHEMA_VERSION + 1
    _write_kit_json(bundle, data)
    cli = CliRunner().invoke(predict_main, [str(bundle), "--self-test"])
    assert cli.exit_code == 2 and "upgrade edgeport" in cli.output


def test_a_kit_changed_after_export_is_refused_and_its_tolerances_are_bounded(bundle):
    """Issue #33: weights ×1.3 with kit.json's tolerance set to 1e9 (kit not rehashed) passed the self-test and was
    served. The kit is hashed in the manifest like the model files, and a rehashed kit cannot allow 1e9 either."""
    data = _kit_json(bundle)
    data["formats"]["onnx"]["tolerance"]["max_abs_logit_diff"] = 1e9
    _write_kit_json(bundle, data, rehash=False)
    cli = CliRunner().invoke(predict_main, ["self-test", str(bundle)])
    assert cli.exit_code == 2 and "does not match its sha256" in cli.output and KIT_NAME in cli.output
    _write_kit_json(bundle, data, rehash=True)
    cli = CliRunner().invoke(predict_main, ["self-test", str(bundle)])
    assert cli.exit_code == 2 and "checks nothing" in cli.output, cli.output
    with pytest.raises(ConformanceError, match="checks nothing"):
        self_test(Classifier(bundle))


def test_a_kit_file_the_manifest_does_not_list_is_refused(bundle):
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    del manifest["files"][f"{KIT_DIR}/inputs/00.npy"]
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="not listed"):
        self_test(Classifier(bundle))


def test_a_bundle_without_a_kit_says_how_to_get_one(bundle):
    shutil.rmtree(bundle / KIT_DIR)
    cli = CliRunner().invoke(predict_main, [str(bundle), "--self-test"])
    assert cli.exit_code == 2 and "has no conformance kit" in cli.output and "re-export" in cli.output


def test_self_test_takes_no_inputs(imagenet_bundle, sample_photos):
    cli = CliRunner().invoke(predict_main, [str(imagenet_bundle), str(sample_photos[0]), "--self-test"])
    assert cli.exit_code == 2 and "--self-test" in cli.output
