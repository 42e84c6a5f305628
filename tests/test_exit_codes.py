"""One table maps error types to exit codes for every CLI (``runtime.errors.EXIT_CODES``), documented in
docs/exit-codes.md; anything else is an internal error (exit 1) with the traceback under --debug."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from edgeport.export.bench.cli import main as bench_main
from edgeport.export.cli import main as export_main
from edgeport.runtime import errors
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.errors import ExitCode, exit_code_for
from edgeport.runtime.manifest import read_manifest
from edgeport.trainer.cli import main as train_main
from edgeport.trainer.explain.cli import main as explain_main

REPO = Path(__file__).resolve().parents[1]

#: The documented code of every error type (a table test: changing a code means changing the docs and this).
EXPECTED = {
    "EdgeportError": 2, "UsageError": 2, "MissingDependencyError": 2, "ContractError": 2, "ImageDecodeError": 2,
    "FrameSourceError": 2, "ModelLoadError": 2, "IntegrityError": 2, "ManifestError": 2, "SignatureError": 2, "ConformanceError": 2, "DataError": 2, "CalibrationError": 2,
    "WeightsNotFoundError": 2, "LayerNameError": 2, "VerificationError": 3, "GateError": 2, "AccuracyGateError": 4,
    "SpeedGateError": 5, "WorkerFailedError": 7, "ConfigError": 2, "DeliveryError": 8,
}


def _make(cls: type) -> BaseException:
    return cls("file.jpg", "broken") if cls is errors.ImageDecodeError else cls("x")


def test_every_error_type_has_its_documented_code():
    types = {name: getattr(errors, name) for name in errors.__all__
             if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), errors.EdgeportError)}
    assert set(types) == set(EXPECTED), "a new error type needs its row here and in docs/exit-codes.md"
    for name, cls in types.items():
        assert exit_code_for(_make(cls))[1] == EXPECTED[name], name


def test_anything_else_is_internal_and_ctrl_c_is_130():
    assert exit_code_for(ZeroDivisionError()) == ("internal", ExitCode.INTERNAL)
    assert exit_code_for(ValueError("a bug, not a usage error")) == ("internal", 1)
    assert exit_code_for(KeyboardInterrupt()) == ("interrupted", 130)


def test_the_exit_code_doc_lists_every_code():
    doc = (REPO / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", doc, re.M)}
    codes = {v for k, v in vars(ExitCode).items() if k.isupper()}
    assert documented == codes


def test_an_internal_error_exits_1_with_a_hint_and_the_traceback_under_debug(monkeypatch, tmp_path):
    import edgeport.export.pipeline as pipeline

    def boom(*args, **kwargs):
        raise ZeroDivisionError("an edgeport bug")

    monkeypatch.setattr(pipeline, "export_bundle", boom)
    plain = CliRunner().invoke(export_main, ["torchvision:mobilenet_v2", "--out", str(tmp_path / "b")])
    assert plain.exit_code == 1 and "Internal error: ZeroDivisionError" in plain.output and "--debug" in plain.output
    assert "Traceback" not in plain.output
    debug = CliRunner().invoke(export_main, ["torchvision:mobilenet_v2", "--out", str(tmp_path / "b"), "--debug"])
    assert debug.exit_code == 1 and "Traceback" in debug.output


def test_a_data_error_exits_2_from_every_cli(tmp_path, hymenoptera):
    """The same DataError exited 1 from edge-train/edge-explain and 2 from edge-export/edge-bench."""
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    train = runner.invoke(train_main, [str(empty), "--out", str(tmp_path / "run")])
    bench = runner.invoke(bench_main, ["torchvision:mobilenet_v2", "--data", str(empty)])
    explain = runner.invoke(explain_main, ["gradcam", "torchvision:mobilenet_v2", str(empty), "--out", str(tmp_path / "g")])
    for name, result in {"edge-train": train, "edge-bench": bench, "edge-explain": explain}.items():
        assert result.exit_code == 2, (name, result.output)
        assert "Error (usage)" in result.output, (name, result.output)


@pytest.mark.slow
def test_undecodable_calibration_images_are_a_data_error_not_a_verification_failure(tmp_path):
    """They exited 3 ("does not reproduce PyTorch"); now 2, with the report saying so."""
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        (calib / f"{i}.jpg").write_text("not an image")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(export_main, ["torchvision:mobilenet_v2", "--out", str(tmp_path / "b"), "--formats",
                                              "onnx-int8", "--calib", str(calib), "--report", str(report)])
    assert result.exit_code == 2, result.output
    assert "no calibration image could be decoded" in result.output
    assert json.loads(report.read_text())["failure"]["kind"] == "usage"


def test_a_newer_manifest_schema_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "files": {}, "formats": {}}))
    with pytest.raises(errors.ModelLoadError, match="schema_version 99 .*upgrade edgeport"):
        read_manifest(tmp_path)
    result = CliRunner().invoke(predict_main, [str(tmp_path), "x.jpg"])
    assert result.exit_code == 2 and "schema_version 99" in result.output
