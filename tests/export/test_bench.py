"""edge-bench on the session's real models: schema, sanity of every figure, outputs, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from edgeport.export import run_benchmark
from edgeport.export.bench.cli import main as bench_main
from edgeport.export.bench.report import SchemaError, markdown_table, validate_report, write_plot, write_report
from edgeport.runtime.manifest import read_manifest
from PIL import Image

BIN = Path(sys.executable).parent
# Few timing rounds: these tests check the measuring, not the machine (speed lives in benchmarks/).
QUICK = {"runs": 3, "min_seconds": 0.0, "warmup": 1, "e2e_images": 2, "batch": 4, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def finetune_report(finetuned_bundle, hymenoptera):
    return run_benchmark(str(finetuned_bundle), hymenoptera / "val", cold_starts=1, tta=True, **QUICK)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, sample_photos) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in sample_photos:
        (folder / photo.name).symlink_to(photo)
    return folder


def test_every_format_and_torch_are_measured_and_the_report_validates(finetune_report, tmp_path):
    assert [r["format"] for r in finetune_report["rows"]] == ["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"]
    assert finetune_report["torch_reference"] == "measured"  # found through the manifest's checkpoint path
    validate_report(finetune_report)
    write_report(finetune_report, tmp_path / "bench.json")
    validate_report(json.loads((tmp_path / "bench.json").read_text()))


def test_figures_are_sane(finetune_report):
    assert finetune_report["labelled"] and finetune_report["images"] == 153
    for row in finetune_report["rows"]:
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"], row["format"]
        assert 0.0 <= row["top1"] <= 1.0 and 0.0 <= row["agreement_vs_torch"] <= 1.0
        assert row["throughput_images_per_s"] > 0 and row["end_to_end_ms_per_image"] > 0
        assert row["cpu"]["model"] and row["versions"]["onnxruntime"] and row["threads"] == 1
    rows = {r["format"]: r for r in finetune_report["rows"]}
    assert rows["onnx"]["agreement_vs_torch"] == 1.0  # FP32 ONNX reproduces PyTorch on all 153 val photos
    assert rows["onnx"]["max_abs_logit_diff_vs_torch"] < 1e-3
    assert rows["onnx"]["drop_vs_torch_pp"] == 0.0
    assert rows["torch"]["edge_predict"] is None and rows["torch"]["latency_ratio_vs_torch"] == 1.0
    for name in ("onnx", "onnx-int8", "openvino", "openvino-int8"):
        assert rows[name]["edge_predict"]["cold_start_ms"] > 0 and rows[name]["edge_predict"]["peak_rss_mb"] > 10
    assert rows["onnx-int8"]["latency_ratio_vs_fp32"] == pytest.approx(rows["onnx-int8"]["latency_ms"]["p50"] / rows["onnx"]["latency_ms"]["p50"], rel=1e-3)


def test_int8_rows_name_the_method_that_made_them(finetune_report):
    methods = {r["format"]: r["int8_method"] for r in finetune_report["rows"]}
    assert methods == {"torch": None, "onnx": None, "onnx-int8": "ptq", "openvino": None, "openvino-int8": "nncf-ptq"}
    assert "| onnx-int8 (ptq) |" in markdown_table(finetune_report)


def test_file_sizes_are_the_files_on_disk(finetune_report, finetuned_bundle, finetuned_run):
    formats = read_manifest(finetuned_bundle)["formats"]
    for row in finetune_report["rows"]:
        if row["format"] == "torch":
            assert row["size_bytes"] == Path(finetuned_run.best_path).stat().st_size
        else:
            files = formats[row["format"]]["files"]
            assert row["size_bytes"] == sum((finetuned_bundle / f).stat().st_size for f in files)


def test_validator_rejects_what_the_schema_does_not_document(finetune_report):
    broken = json.loads(json.dumps(finetune_report))
    del broken["rows"][1]["latency_ms"]
    with pytest.raises(SchemaError, match="latency_ms"):
        validate_report(broken)
    broken = json.loads(json.dumps(finetune_report))
    broken["rows"][0]["top1"] = "95%"
    with pytest.raises(SchemaError, match="top1"):
        validate_report(broken)


def test_tta_is_reported_for_the_torch_row_only(finetune_report):
    """edge-bench --tta (issue #14): the torch row's accuracy with test-time augmentation, beside its plain top-1."""
    rows = {r["format"]: r for r in finetune_report["rows"]}
    assert 0.9 <= rows["torch"]["top1_tta"] <= 1.0 and abs(rows["torch"]["top1_tta"] - rows["torch"]["top1"]) <= 0.05
    assert all(rows[name]["top1_tta"] is None for name in rows if name != "torch")  # never a deployed format
    assert f"top-1 {100 * rows['torch']['top1_tta']:.2f}%" in markdown_table(finetune_report)


def test_table_and_plot(finetune_report, tmp_path):
    table = markdown_table(finetune_report)
    assert table.count("\n| ") == len(finetune_report["rows"]) == 5  # torch + the four formats, one line each
    assert "| onnx-int8 (ptq) |" in table and "top-1 %" in table  # the INT8 rows name the method that made them
    write_plot(finetune_report, tmp_path / "bench.png")
    data = (tmp_path / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "bench.png") as img:
        img.verify()
        assert img.size[0] > 500


def test_unlabelled_photos_give_agreement_with_torchvision(imagenet_bundle, photo_folder):
    report = run_benchmark(str(imagenet_bundle), photo_folder, formats="torch,onnx", cold_starts=0, **QUICK)
    validate_report(report)
    assert not report["labelled"] and report["metric"] == "agreement_vs_torch"
    onnx_row = report["rows"][1]
    assert onnx_row["top1"] is None and onnx_row["agreement_vs_torch"] == 1.0 and onnx_row["edge_predict"] is None


def test_cli_as_a_real_process_writes_table_json_and_plot(imagenet_bundle, photo_folder, tmp_path):
    out = subprocess.run(
        [str(BIN / "edge-bench"), str(imagenet_bundle), "--data", str(photo_folder), "--formats", "onnx", "--runs", "3",
         "--min-seconds", "0", "--warmup", "1", "--e2e-images", "1", "--cold-starts", "1", "--quiet",
         "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "| onnx |" in out.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    validate_report(report)
    assert report["rows"][0]["edge_predict"]["runs"] == 1
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def _plain_onnx(bundle: Path, dst: Path) -> Path:
    model = onnx.load(str(bundle / "model.onnx"))
    del model.metadata_props[:]  # what a plain torch.onnx.export file looks like: no edgeport.contract
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("case", ["unknown format", "empty data", "no contract"])
def test_cli_errors_say_what_is_wrong(case, imagenet_bundle, photo_folder, tmp_path):
    args = [str(imagenet_bundle), "--data", str(photo_folder), "--quiet"]
    if case == "unknown format":
        args += ["--formats", "onnx,tflite"]
        expected = "unknown format(s) ['tflite']; choose from torch, onnx"
    elif case == "empty data":
        (tmp_path / "empty").mkdir()
        args[2] = str(tmp_path / "empty")
        expected = "holds no images"
    else:
        args[0] = str(_plain_onnx(imagenet_bundle, tmp_path / "plain.onnx"))
        expected = "carries no preprocessing contract"
    result = CliRunner().invoke(bench_main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_unknown_format_as_a_real_process(imagenet_bundle, photo_folder):
    out = subprocess.run([str(BIN / "edge-bench"), str(imagenet_bundle), "--data", str(photo_folder), "--formats", "tflite"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown format(s) ['tflite']" in out.stderr


@pytest.mark.slow
def test_a_checkpoint_without_calib_measures_the_formats_that_need_none(photo_folder):
    """The first command a new user types failed on its default format list ("onnx-int8, openvino-int8 need
    --calib DIR"); now it measures the others and says in one line how to add the INT8 ones."""
    out = subprocess.run(
        [str(BIN / "edge-bench"), "torchvision:mobilenet_v2", "--data", str(photo_folder), "--runs", "3",
         "--min-seconds", "0", "--warmup", "1", "--e2e-images", "1", "--cold-starts", "0", "--quiet"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1].strip() for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["torch", "onnx", "openvino", "openvino-fp16"]
    assert "onnx-int8, openvino-int8 skipped: they need calibration images; add --calib DIR" in out.stderr
