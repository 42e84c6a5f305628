"""edge-export --sign-key and the conformance kit, on one real FP32 + INT8 export (shared by the module)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from edgeport.export.cli import main as export_main
from edgeport.runtime import Classifier
from edgeport.runtime.conformance import read_kit, self_test_bundle
from edgeport.runtime.signing import SIGNATURE_NAME, VERIFY_KEY_ENV, verify_bundle

from ..keys import make_key_pair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_key_pair(tmp_path_factory.mktemp("keys"), "release")


@pytest.fixture(scope="module")
def signed_export(tmp_path_factory, keys, hymenoptera):
    out = tmp_path_factory.mktemp("signed") / "bundle"
    report = out.parent / "report.json"
    result = CliRunner().invoke(export_main, [
        "torchvision:mobilenet_v2", "--out", str(out), "--formats", "onnx,onnx-int8", "--calib", str(hymenoptera / "train"),
        "--calib-size", "10", "--sign-key", str(keys[0]), "--report", str(report)],
        env={VERIFY_KEY_ENV: str(keys[1])})  # a device-wide key on the build machine does not block the export's checks
    assert result.exit_code == 0, result.output
    return out, json.loads(report.read_text())


def test_export_signs_the_whole_bundle_last(signed_export, keys):
    bundle, report = signed_export
    check = verify_bundle(bundle, keys[1])
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != SIGNATURE_NAME}
    assert set(check.signed_files) == files  # the final manifest and the kit included
    assert {"manifest.json", "model.int8.onnx", "conformance/kit.json"} <= files
    assert report["signed"] is True and report["status"] == "passed"
    assert Classifier(bundle, format="onnx-int8", verify_key=keys[1]).labels


def test_the_kit_has_looser_tolerances_for_int8_derived_from_export(signed_export, keys):
    bundle, _ = signed_export
    kit = read_kit(bundle)
    fp32, int8 = kit.data["formats"]["onnx"], kit.data["formats"]["onnx-int8"]
    assert int8["tolerance"]["max_abs_logit_diff"] > 10 * fp32["tolerance"]["max_abs_logit_diff"]
    assert "vs FP32 ONNX" in int8["tolerance"]["basis"] and "vs PyTorch" in fp32["tolerance"]["basis"]
    report = self_test_bundle(bundle, verify_key=keys[1])
    assert report.passed, report.text()
    assert [r.format for r in report.results] == ["onnx", "onnx-int8"]


def test_a_bad_sign_key_fails_before_any_export_work(tmp_path):
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(export_main, ["torchvision:mobilenet_v2", "--out", str(out), "--sign-key", str(not_a_key)])
    assert result.exit_code == 2 and "not a usable elliptic-curve private key" in result.output
    assert not out.exists() and "exporting" not in result.output
    cert_alone = CliRunner().invoke(export_main, ["torchvision:mobilenet_v2", "--out", str(out), "--sign-cert", str(not_a_key)])
    assert cert_alone.exit_code == 2 and "need --sign-key" in cert_alone.output and not out.exists()
