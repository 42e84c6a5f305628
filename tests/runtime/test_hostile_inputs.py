"""Hostile inputs (issue #16): every probe a hostile tester ran against edge-predict, kept as a test.

Each test names its finding. The models are tiny real ONNX colour classifiers (``tiny_models``) run by
real onnxruntime sessions, so the probes need no export; real processes where the finding is about one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeport.runtime import Classifier
from edgeport.runtime.backends import create_backend
from edgeport.runtime.bundle import resolve_model
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.errors import ContractError, IntegrityError, ModelLoadError
from edgeport.runtime.manifest import file_entries, read_manifest

from .tiny_models import COLOURS, colour_bundle, colour_model, write_manifest

BIN = Path(sys.executable).parent
RED = (200, 30, 30)


def solid(path: Path, colour=RED, size=(64, 48), fmt: str | None = None) -> Path:
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def bundle(tmp_path) -> Path:
    return colour_bundle(tmp_path / "bundle")


# ---- 1. Manifest paths are trusted -------------------------------------------------------------------------------

def _tamper(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("outside", ["../secret.onnx", "ABSOLUTE"])
def test_1_manifest_paths_outside_the_bundle_are_refused_unread(bundle, tmp_path, outside):
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"a file beside the bundle that a manifest must not reach")
    name = str(secret) if outside == "ABSOLUTE" else outside
    secret_prefix = hashlib.sha256(secret.read_bytes()).hexdigest()[:12]

    def edit(m):
        m["files"][name] = {"sha256": "0" * 64, "bytes": secret.stat().st_size}
        m["formats"]["onnx"]["files"].append(name)

    _tamper(bundle, edit)
    with pytest.raises(ModelLoadError, match="inside the bundle") as err:
        Classifier(bundle)
    assert secret_prefix not in str(err.value)


def test_1_a_symlink_out_of_the_bundle_is_refused(bundle, tmp_path):
    outside = colour_model(tmp_path / "elsewhere" / "other.onnx", weights=-np.eye(3, dtype=np.float32))
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    write_manifest(bundle)  # even a manifest that hashes the target: the file is not the bundle's own
    with pytest.raises(ModelLoadError, match="outside the bundle"):
        Classifier(bundle)


def test_1_the_loaded_file_is_the_hashed_file(bundle):
    colour_model(bundle / "evil.onnx", weights=-np.eye(3, dtype=np.float32))
    _tamper(bundle, lambda m: m["formats"]["onnx"].update(file="evil.onnx"))  # files still lists model.onnx only
    with pytest.raises(ModelLoadError, match="formats\\['onnx'\\]"):
        Classifier(bundle)


def test_1_a_model_swapped_after_verification_is_not_loaded(bundle, tmp_path):
    resolved = resolve_model(bundle)
    colour_model(tmp_path / "swap.onnx", weights=-np.eye(3, dtype=np.float32) * 10)
    os.replace(tmp_path / "swap.onnx", bundle / "model.onnx")  # between the check and the load
    backend = create_backend(resolved.backend, resolved.path, verified_bytes=resolved.verified_bytes)
    image = np.zeros((1, 3, 224, 224), np.float32)
    image[0, 0] = 1.0  # a red-ish tensor: the verified model says red, the swapped one would not
    assert COLOURS[int(backend.run(image).argmax())] == "red"


def test_1_unlisted_external_data_is_refused_and_listed_external_data_loads(tmp_path, monkeypatch):
    bundle = tmp_path / "ext"
    colour_model(bundle / "model.onnx", external="w.bin")
    write_manifest(bundle, files={k: v for k, v in file_entries(bundle).items() if k != "w.bin"})
    with pytest.raises(IntegrityError, match="w.bin"):
        Classifier(bundle)
    write_manifest(bundle)  # now w.bin is listed and hashed
    monkeypatch.chdir(tmp_path)  # the external file is handed over in memory, not found relative to the cwd
    clf = Classifier(bundle)
    assert clf.predict(solid(tmp_path / "red.png")).label == "red"
    data = bytearray((bundle / "w.bin").read_bytes())
    data[0] ^= 0x40
    (bundle / "w.bin").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="w.bin"):
        Classifier(bundle)


# ---- 2. A model file passed directly ---------------------------------------------------------------------------

def test_2_a_symlink_or_unlisted_copy_inside_a_bundle_is_verified_as_part_of_it(bundle, tmp_path):
    link = tmp_path / "elsewhere" / "link.onnx"
    link.parent.mkdir()
    link.symlink_to(bundle / "model.onnx")
    assert Classifier(link).format == "onnx"  # verified as the bundle's onnx format
    colour_model(bundle / "model.onnx", weights=-np.eye(3, dtype=np.float32))  # replaced after export
    with pytest.raises(IntegrityError):
        Classifier(link)
    shutil.copy(bundle / "model.onnx", bundle / "copy.onnx")  # not a file of any format
    with pytest.raises(ModelLoadError, match="not the file of any of its formats"):
        Classifier(bundle / "copy.onnx")


# ---- 3. Malformed manifests ------------------------------------------------------------------------------------

MALFORMED = {
    "bad utf-8": (lambda p: p.write_bytes(b'{"schema_version": 1, "name": "\xff\xfe"}'), "UTF-8"),
    "deep nesting": (lambda p: p.write_text('{"schema_version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nests"),
    "non-object entry": (lambda p: _edit(p, lambda m: m["formats"].update(onnx=["model.onnx"])), "formats['onnx']"),
    "missing file": (lambda p: _edit(p, lambda m: m["formats"]["onnx"].pop("file")), "'file'"),
    "integer sha256": (lambda p: _edit(p, lambda m: m["files"]["model.onnx"].update(sha256=12345)), "sha256"),
    "2 MB manifest": (lambda p: _edit(p, lambda m: m.update(padding="x" * (2 << 20))), "larger than"),
    "top-level list": (lambda p: p.write_text("[1, 2]"), "JSON object"),
}


def _edit(path: Path, edit) -> None:
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_3_malformed_manifests_exit_2_naming_the_field(bundle, tmp_path, case):
    write, words = MALFORMED[case]
    write(bundle / "manifest.json")
    result = CliRunner().invoke(predict_main, [str(bundle), str(solid(tmp_path / "red.png"))])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    with pytest.raises(ModelLoadError):
        read_manifest(bundle)
