"""Signed bundles: real EC keys, the real ImageNet bundle, the model-signing library and its own CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from edgeport.export.bench.cli import main as bench_main
from edgeport.export.bench.run import run_benchmark
from edgeport.export.signing import sign_bundle
from edgeport.runtime import Classifier
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.errors import MissingDependencyError, SignatureError, UsageError
from edgeport.runtime.manifest import MANIFEST_NAME, sha256_file
from edgeport.runtime.signing import SIGNATURE_NAME, VERIFY_KEY_ENV, verify_bundle

from ..bundles import scale_weights
from ..keys import make_ca_and_leaf, make_key_pair

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    release, release_pub = make_key_pair(folder, "release")
    other, other_pub = make_key_pair(folder, "other")
    return {"private": release, "public": release_pub, "other_private": other, "other_public": other_pub}


@pytest.fixture(scope="module")
def signed_bundle(imagenet_bundle, keys, tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("signed") / "mobilenet_v2"
    shutil.copytree(imagenet_bundle, bundle)
    sign_bundle(bundle, keys["private"])
    return bundle


@pytest.fixture
def bundle(signed_bundle, tmp_path) -> Path:
    """A private copy of the signed bundle that a test may tamper with."""
    copy = tmp_path / "bundle"
    shutil.copytree(signed_bundle, copy)
    return copy


def _predict(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(predict_main, args, env=env)


def test_signed_bundle_is_served_with_its_key(bundle, keys, sample_photos):
    assert (bundle / SIGNATURE_NAME).is_file()
    check = verify_bundle(bundle, keys["public"])
    # The signature covers every file of the bundle, the manifest included.
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != SIGNATURE_NAME}
    assert set(check.signed_files) == on_disk and MANIFEST_NAME in on_disk
    assert check.signed_files["model.onnx"] == sha256_file(bundle / "model.onnx")
    clf = Classifier(bundle, verify_key=keys["public"])
    assert clf.predict(sample_photos[0]).score > 0
    result = _predict([str(bundle), str(sample_photos[0]), "--verify-key", str(keys["public"]), "--format", "jsonl"])
    assert result.exit_code == 0, result.output


def test_unsigned_bundle_is_refused(imagenet_bundle, keys, sample_photos):
    result = _predict([str(imagenet_bundle), str(sample_photos[0]), "--verify-key", str(keys["public"])])
    assert result.exit_code == 2, result.output
    assert "is not signed" in result.output and SIGNATURE_NAME in result.output
    with pytest.raises(SignatureError, match="is not signed"):
        Classifier(imagenet_bundle, verify_key=keys["public"])


def test_signature_by_another_key_is_refused(bundle, keys, sample_photos):
    result = _predict([str(bundle), str(sample_photos[0]), "--verify-key", str(keys["other_public"])])
    assert result.exit_code == 2, result.output
    assert "bad signature" in result.output and str(bundle.resolve() / SIGNATURE_NAME) in result.output
    # Re-signed by an attacker's key: refused as well.
    sign_bundle(bundle, keys["other_private"])
    with pytest.raises(SignatureError, match="bad signature"):
        Classifier(bundle, verify_key=keys["public"])


def test_damaged_signature_file_is_refused(bundle, keys):
    (bundle / SIGNATURE_NAME).write_text("{not json")
    with pytest.raises(SignatureError, match="bad signature"):
        Classifier(bundle, verify_key=keys["public"])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_model_changed_after_signing_is_refused_even_with_the_manifest_rewritten(bundle, keys, sample_photos):
    scale_weights(bundle / "model.onnx")  # an attacker's model: it loads and runs
    result = _predict([str(bundle), str(sample_photos[0]), "--verify-key", str(keys["public"])])
    assert result.exit_code == 2 and "changed after signing" in result.output and "model.onnx" in result.output
    # The attacker rewrites the manifest to match: the sha256 check alone now passes …
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["files"]["model.onnx"].update(sha256=sha256_file(bundle / "model.onnx"), bytes=(bundle / "model.onnx").stat().st_size)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert _predict([str(bundle), str(sample_photos[0])]).exit_code == 0
    # … the signature does not, and the error names both files.
    result = _predict([str(bundle), str(sample_photos[0]), "--verify-key", str(keys["public"])])
    assert result.exit_code == 2, result.output
    assert "files changed after signing (changed: manifest.json, model.onnx)" in result.output


def test_a_truncated_signature_is_called_truncated(bundle, keys):
    """It was reported as 'not made by a key that … vouches for', which sends the operator after the wrong key."""
    data = (bundle / SIGNATURE_NAME).read_bytes()
    (bundle / SIGNATURE_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(SignatureError, match="truncated") as caught:
        Classifier(bundle, verify_key=keys["public"])
    assert "vouches for" not in str(caught.value)


@pytest.mark.parametrize("added", [".git/config", ".gitattributes"])
def test_files_the_signing_library_ignores_are_refused_when_added_after_signing(bundle, keys, added):
    """model-signing skips .git, .gitattributes …; docs/fleet-updates.md promises that any file added is refused."""
    (bundle / added).parent.mkdir(exist_ok=True)
    (bundle / added).write_text("* filter=evil\n")
    with pytest.raises(SignatureError, match="files added after signing") as caught:
        Classifier(bundle, verify_key=keys["public"])
    assert added in str(caught.value)


def test_file_added_after_signing_is_refused(bundle, keys):
    (bundle / "extra.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    with pytest.raises(SignatureError, match=r"\(added: extra.onnx\)"):
        Classifier(bundle, verify_key=keys["public"])


def test_device_wide_key_from_the_environment_in_a_real_process(imagenet_bundle, bundle, keys, sample_photos):
    env = {**os.environ, VERIFY_KEY_ENV: str(keys["public"])}
    cmd = [str(BIN / "edge-predict"), "--format", "jsonl"]
    refused = subprocess.run([*cmd, str(imagenet_bundle), str(sample_photos[0])], env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "is not signed" in refused.stderr, refused.stderr
    served = subprocess.run([*cmd, str(bundle), str(sample_photos[0])], env=env, capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout.splitlines()[0])["ok"] is True
    # Python API: the environment's key applies unless verification is turned off explicitly.
    os.environ[VERIFY_KEY_ENV] = str(keys["public"])
    try:
        with pytest.raises(SignatureError):
            Classifier(imagenet_bundle)
        assert Classifier(imagenet_bundle, verify_key=False).labels
    finally:
        del os.environ[VERIFY_KEY_ENV]


def test_the_library_cli_verifies_our_signature(bundle, keys):
    cmd = [str(BIN / "model_signing"), "verify", "key", str(bundle), "--signature", str(bundle / SIGNATURE_NAME),
           "--public_key", str(keys["public"])]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stdout + ok.stderr
    _flip_last_byte(bundle / "labels.txt")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "labels.txt" in bad.stderr, bad.stdout + bad.stderr


def test_a_bundle_signed_with_the_library_cli_is_served(imagenet_bundle, keys, tmp_path, sample_photos):
    bundle = tmp_path / "bundle"
    shutil.copytree(imagenet_bundle, bundle)
    cmd = [str(BIN / "model_signing"), "sign", "key", str(bundle), "--signature", str(bundle / SIGNATURE_NAME),
           "--private_key", str(keys["private"])]
    signed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert Classifier(bundle, verify_key=keys["public"]).predict(sample_photos[0]).label


def test_a_bare_model_file_is_refused_unless_inside_a_verified_bundle(bundle, keys, tmp_path):
    bare = tmp_path / "model.onnx"
    shutil.copy(bundle / "model.onnx", bare)
    assert Classifier(bare, verify_key=False).labels  # no key: a bare file is served as before
    with pytest.raises(SignatureError, match="bare model file"):
        Classifier(bare, verify_key=keys["public"])
    assert Classifier(bundle / "model.onnx", verify_key=keys["public"]).labels
    _flip_last_byte(bundle / "labels.txt")  # any file of the bundle changed: its model files are refused too
    with pytest.raises(SignatureError, match="labels.txt"):
        Classifier(bundle / "model.onnx", verify_key=keys["public"])


def test_a_symlinked_bundle_path_is_verified_through_the_link(bundle, keys, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(bundle, target_is_directory=True)
    clf = Classifier(link, verify_key=keys["public"])
    assert clf.model_path == bundle.resolve() / "model.onnx"  # the folder that was verified is the one loaded


def test_edge_bench_refuses_an_unsigned_bundle(imagenet_bundle, keys, sample_photos, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_photos[0], data)
    with pytest.raises(SignatureError, match="is not signed"):
        run_benchmark(str(imagenet_bundle), data, verify_key=keys["public"], cold_starts=0, progress=False)
    result = CliRunner().invoke(bench_main, [str(imagenet_bundle), "--data", str(data), "--verify-key", str(keys["public"]),
                                             "--cold-starts", "0", "--quiet"])
    assert result.exit_code == 2 and "is not signed" in result.output


def test_bad_verify_key_files_are_usage_errors(bundle, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        Classifier(bundle, verify_key=tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(UsageError, match="not a PEM public key"):
        Classifier(bundle, verify_key=junk)


def test_verification_without_the_extra_says_what_to_install(bundle, keys, monkeypatch):
    monkeypatch.setitem(sys.modules, "model_signing", None)  # the [signing] extra is not installed
    with pytest.raises(MissingDependencyError, match=r"edgeport\[signing\]"):
        Classifier(bundle, verify_key=keys["public"])


def test_the_manifest_used_for_loading_must_list_the_signed_digests(bundle, keys):
    """A manifest swapped between signature verification and loading cannot vouch for other bytes."""
    check = verify_bundle(bundle, keys["public"])
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    check.vouch_for(manifest, ["model.onnx"])
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    with pytest.raises(SignatureError, match="not the signed one"):
        check.vouch_for(manifest, ["model.onnx"])


def test_the_certificate_method_verifies_against_the_ca(imagenet_bundle, keys, tmp_path, sample_photos):
    """edge-export --sign-key --sign-cert: the signature carries the certificate; devices hold the CA certificate."""
    leaf_key, leaf_cert, ca = make_ca_and_leaf(tmp_path / "pki", "release")
    _, _, other_ca = make_ca_and_leaf(tmp_path / "pki", "other")
    bundle = tmp_path / "bundle"
    shutil.copytree(imagenet_bundle, bundle)
    with pytest.raises(UsageError, match="needs --sign-cert-chain"):
        sign_bundle(bundle, leaf_key, certificate=leaf_cert)
    sign_bundle(bundle, leaf_key, certificate=leaf_cert, chain=[ca])
    assert Classifier(bundle, verify_key=ca).predict(sample_photos[0]).label
    for wrong in (other_ca, keys["public"]):  # another CA, or a key where the bundle carries a certificate
        with pytest.raises(SignatureError, match="bad signature"):
            Classifier(bundle, verify_key=wrong)
    cmd = [str(BIN / "model_signing"), "verify", "certificate", str(bundle), "--signature", str(bundle / SIGNATURE_NAME),
           "--certificate_chain", str(ca)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stdout + ok.stderr
    _flip_last_byte(bundle / "labels.txt")
    with pytest.raises(SignatureError, match=r"changed after signing \(changed: labels.txt\)"):
        Classifier(bundle, verify_key=ca)
