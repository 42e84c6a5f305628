"""edge-export as a release-build step: gates, exit codes, report, atomicity, reproducibility."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from edgeport.export.checks.gates import apply_gates, raise_on_failed_gates
from edgeport.export.cli import main as export_main
from edgeport.runtime import Classifier
from edgeport.runtime.errors import SpeedGateError
from edgeport.runtime.manifest import sha256_file

BIN = Path(sys.executable).parent


def test_passing_gates_write_bundle_and_report(finetuned_run, finetuned_bundle, hymenoptera, tmp_path):
    report = tmp_path / "report.json"
    args = [str(finetuned_run.best_path), "--out", str(tmp_path / "dist"), "--formats", "onnx,onnx-int8,openvino,openvino-int8",
            "--calib", str(hymenoptera / "train"), "--calib-size", "50", "--eval", str(hymenoptera / "val"),
            "--max-drop", "5", "--report", str(report)]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["status"] == "passed" and data["exit_code"] == 0 and data["bundle_written"]
    assert data["eval"]["labelled"] and data["eval"]["images"] == 153
    assert 0.9 <= data["torch"]["top1"] <= 1.0
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    for name, row in data["formats"].items():
        assert row["sha256"] == sha256_file(tmp_path / "dist" / row["file"])
        assert row["bytes"] == sum((tmp_path / "dist" / f).stat().st_size for f in manifest["formats"][name]["files"])
        assert row["gates"]["accuracy"] == "pass" and row["latency_ms_p50"] > 0
        assert abs(row["drop_vs_torch_pp"] - (data["torch"]["top1"] - row["top1"]) * 100) < 1e-3
    assert data["formats"]["onnx"]["drop_vs_torch_pp"] == 0 and data["formats"]["onnx"]["agreement_vs_torch"] == 1.0
    # Same checkpoint → byte-identical model files (fixed calibration order, no timestamps). Not
    # openvino-int8: with --max-drop it is built by NNCF's accuracy control, another code path.
    assert data["formats"]["openvino-int8"]["accuracy_control"]["float_nodes"] == []  # within budget as quantized
    for name in ("model.onnx", "model.int8.onnx", "openvino/model.xml", "openvino/model.bin"):
        assert sha256_file(tmp_path / "dist" / name) == sha256_file(finetuned_bundle / name), name
    assert manifest["int8_target_cpu"] == "host" and manifest["cpu"]["flags"]
    assert manifest["source"]["checkpoint_sha256"] == sha256_file(finetuned_run.best_path)


def test_failing_accuracy_gate_exits_4_keeps_the_old_bundle_and_still_reports(imagenet_bundle, hymenoptera, tmp_path):
    """ImageNet INT8 on photos without ImageNet labels: the gate uses agreement with PyTorch.
    onnxruntime's quantizer (no accuracy control) on 20 calibration images cannot keep 99% agreement."""
    target = tmp_path / "dist"
    shutil.copytree(imagenet_bundle, target)
    before = sha256_file(target / "model.onnx")
    report = tmp_path / "report.json"
    out = subprocess.run(
        [str(BIN / "edge-export"), "torchvision:mobilenet_v2", "--out", str(target), "--formats", "onnx-int8",
         "--int8-engine", "onnxruntime",
         "--calib", str(hymenoptera / "train"), "--calib-size", "20", "--eval", str(hymenoptera / "val"),
         "--max-drop", "1", "--report", str(report)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert out.returncode == 4, out.stderr[-2000:]
    assert "accuracy gate" in out.stderr and "onnx-int8 drops" in out.stderr
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and data["exit_code"] == 4 and not data["bundle_written"]
    assert data["failure"]["kind"] == "accuracy_gate" and not data["eval"]["labelled"]
    assert data["formats"]["onnx-int8"]["gates"]["accuracy"] == "fail"
    assert data["formats"]["onnx-int8"]["drop_vs_torch_pp"] > 1
    assert data["formats"]["onnx"]["gates"]["accuracy"] == "pass"
    assert sha256_file(target / "model.onnx") == before and Classifier(target).labels[281] == "tabby"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "report.json"]


def test_speed_gate_fails_an_int8_format_that_is_not_faster():
    formats = {"onnx": {"precision": "fp32"}, "onnx-int8": {"precision": "int8"}}
    verification = {"onnx": {}, "onnx-int8": {"latency_ratio_vs_fp32": 1.08}}
    gates = apply_gates(None, formats, verification, max_drop=None, require_speedup=True)
    assert gates == {"onnx": {"accuracy": "skipped", "speed": "skipped"}, "onnx-int8": {"accuracy": "skipped", "speed": "fail"}}
    with pytest.raises(SpeedGateError, match="onnx-int8 runs at ×1.08 of FP32"):
        raise_on_failed_gates({"gates": gates, "verification": verification}, max_drop=None)
    verification["onnx-int8"]["latency_ratio_vs_fp32"] = 0.6
    assert apply_gates(None, formats, verification, None, True)["onnx-int8"]["speed"] == "pass"


def test_usage_errors_exit_2_with_a_report(finetuned_run, tmp_path):
    report = tmp_path / "r.json"
    result = CliRunner().invoke(export_main, [str(finetuned_run.best_path), "--out", str(tmp_path / "d"),
                                              "--max-drop", "1", "--report", str(report)])
    assert result.exit_code == 2 and "--max-drop needs --eval" in result.output
    assert json.loads(report.read_text())["failure"]["kind"] == "usage"


@pytest.mark.parametrize("had_bundle", [True, False])
def test_a_killed_export_leaves_the_old_bundle_or_none(finetuned_run, finetuned_bundle, tmp_path, had_bundle):
    target = tmp_path / "dist"
    if had_bundle:
        shutil.copytree(finetuned_bundle, target)
    proc = subprocess.Popen([str(BIN / "edge-export"), str(finetuned_run.best_path), "--out", str(target),
                             "--formats", "onnx,openvino"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(tmp_path.glob(".dist.staging-*/model.onnx")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if had_bundle:
        assert Classifier(target, format="openvino-int8").format == "openvino-int8"  # the old bundle, sha-verified
        assert sha256_file(target / "model.onnx") == sha256_file(finetuned_bundle / "model.onnx")
    else:
        assert not target.exists()
