"""INT8 formats: really quantized, contract intact, close to FP32 on real images."""

import json

import pytest
from edgeport.export.quantize import check_really_quantized, choose_scheme, select_calibration_images
from edgeport.runtime import Classifier, VerificationError

INT8_FORMATS = ("onnx-int8", "openvino-int8")


@pytest.mark.parametrize(
    "cpu, target, reduce_range",
    [
        ({"machine": "x86_64", "flags": ["avx", "avx2", "fma"]}, "avx2", True),
        ({"machine": "x86_64", "flags": ["avx2", "avx512f", "avx512bw"]}, "avx512", True),
        ({"machine": "x86_64", "flags": ["avx2", "avx512f", "avx512_vnni"]}, "vnni", False),
        ({"machine": "x86_64", "flags": ["avx2", "avx_vnni"]}, "vnni", False),
        ({"machine": "aarch64", "flags": ["asimd", "asimddp"]}, "arm64", False),
    ],
)
def test_scheme_follows_the_cpu(cpu, target, reduce_range):
    scheme = choose_scheme("host", cpu)
    assert (scheme.target_cpu, scheme.reduce_range) == (target, reduce_range)
    assert (scheme.activation_type, scheme.weight_type) == ("uint8", "int8")
    assert choose_scheme("vnni", cpu).reduce_range is False  # --target-cpu overrides the host
    with pytest.raises(ValueError, match="--target-cpu"):
        choose_scheme("riscv", cpu)


def test_every_format_carries_the_same_contract(finetuned_bundle):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    assert list(manifest["formats"]) == ["onnx", "onnx-int8", "openvino", "openvino-int8"]
    contracts = {fmt: Classifier(finetuned_bundle, format=fmt).contract for fmt in manifest["formats"]}
    assert len(set(contracts.values())) == 1
    assert contracts["onnx"].to_dict() == manifest["contract"]


def test_int8_files_are_really_quantized_and_smaller(finetuned_bundle):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    entry = manifest["formats"]["onnx-int8"]
    assert entry["quantized_ops"]["DequantizeLinear"] > 50 and entry["size_ratio_vs_fp32"] < 0.35
    assert entry["scheme"]["target_cpu"] in ("avx2", "avx512", "vnni", "arm64")
    assert manifest["files"]["openvino-int8/model.bin"]["bytes"] < 0.35 * manifest["files"]["openvino/model.bin"]["bytes"]
    xml = (finetuned_bundle / "openvino-int8" / "model.xml").read_text()
    assert 'type="FakeQuantize"' in xml or 'element_type="i8"' in xml or 'element_type="u8"' in xml
    with pytest.raises(VerificationError, match="no quantized operators"):
        check_really_quantized(finetuned_bundle / "model.onnx", finetuned_bundle / "model.onnx")


@pytest.mark.parametrize("fmt", INT8_FORMATS)
def test_int8_agrees_with_fp32_on_the_val_photos(finetuned_bundle, hymenoptera_val_jpegs, fmt):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    measured = manifest["verification"][fmt]
    assert measured["images"] == 153 and measured["latency_ms_p50"] > 0
    fp32 = Classifier(finetuned_bundle).scores(hymenoptera_val_jpegs).argmax(1)
    int8 = Classifier(finetuned_bundle, format=fmt).scores(hymenoptera_val_jpegs).argmax(1)
    agreement = float((fp32 == int8).mean())
    assert agreement == pytest.approx(measured["top1_agreement_vs_fp32"])
    assert agreement >= 0.95, f"{fmt} agrees with FP32 on only {agreement:.1%} of val photos"


def test_calibration_images_are_spread_and_stable(hymenoptera, tmp_path):
    a = select_calibration_images(hymenoptera / "train", 20)
    assert a == select_calibration_images(hymenoptera / "train", 20) and len(set(a)) == 20
    assert {p.parent.name for p in a} == {"ants", "bees"}
    with pytest.raises(ValueError, match="holds no images"):
        select_calibration_images(tmp_path, 5)


def test_int8_needs_calibration_images(finetuned_run, tmp_path):
    from edgeport.export.pipeline import export_bundle

    with pytest.raises(ValueError, match="onnx-int8 need --calib DIR"):
        export_bundle(str(finetuned_run.best_path), tmp_path / "b", formats="onnx-int8", log=lambda _: None)
