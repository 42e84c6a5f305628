"""AdaRound at export (``formats.reconstruction``): learned rounding beats nearest rounding on images it
did not see, keeps onnxruntime's QDQ layout, and the manifest says which method made the INT8 file."""

import json

import numpy as np
import onnx
import pytest
from edgeport.export.formats.calibration import calibration_tensors, select_calibration_images
from edgeport.export.formats.int8_graph import quantized_op_counts
from edgeport.export.formats.int8_scheme import choose_scheme
from edgeport.runtime.errors import UsageError


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The stem and first three inverted-residual blocks of torchvision's ImageNet MobileNetV2 (real
    weights, 9 convolutions, 7-bit dense weights like an AVX2 CPU without VNNI gets), as FP32 ONNX."""
    from edgeport.export.formats.onnx_fp32 import export_onnx
    from edgeport.trainer.loading import load_model

    src = load_model("torchvision:mobilenet_v2")
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(src.model.features[:4], src.contract, path)
    return path, src.contract


def _quantize(tiny_onnx, hymenoptera, tmp_path, rounding):
    from edgeport.export.formats.onnx_int8 import quantize_onnx

    path, contract = tiny_onnx
    out = tmp_path / ("adaround.onnx" if rounding else "ptq.onnx")
    calib = select_calibration_images(hymenoptera / "train", 16)
    details = quantize_onnx(path, out, contract, calib, choose_scheme("avx2"), bias_correction=False, rounding=rounding)
    return out, details


def _output_mse(fp32, int8, images: np.ndarray) -> float:
    import onnxruntime as ort

    def run(p):
        return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]

    return float(((run(int8) - run(fp32)) ** 2).mean())


@pytest.mark.slow
def test_adaround_beats_nearest_rounding_on_held_out_images(tiny_onnx, hymenoptera, tmp_path):
    from edgeport.export.formats.reconstruction import RoundingOptions

    ptq, ptq_details = _quantize(tiny_onnx, hymenoptera, tmp_path, None)
    ada, ada_details = _quantize(tiny_onnx, hymenoptera, tmp_path, RoundingOptions(iterations=150))
    assert (ptq_details["int8_method"], ada_details["int8_method"]) == ("ptq", "adaround")
    assert ada_details["reconstruction"]["fitted_layers"] == ada_details["reconstruction"]["layers"] == 9
    # Only weight values changed: the same QDQ operators, the same scales (onnxruntime fuses it the same way).
    ptq_model, ada_model = onnx.load(ptq), onnx.load(ada)
    assert quantized_op_counts(ptq_model) == quantized_op_counts(ada_model)
    ptq_w = {i.name: onnx.numpy_helper.to_array(i) for i in ptq_model.graph.initializer}
    ada_w = {i.name: onnx.numpy_helper.to_array(i) for i in ada_model.graph.initializer}
    changed = [n for n in ptq_w if not np.array_equal(ptq_w[n], ada_w[n])]
    assert changed and all(ada_w[n].dtype == np.int8 for n in changed)
    assert all(np.abs(ada_w[n] - ptq_w[n].astype(np.int16)).max() <= 1 for n in changed)  # up or down, never further
    held_out = sorted((hymenoptera / "val").rglob("*.jpg"))[::10]  # 16 val photos calibration never saw
    images, _ = calibration_tensors(held_out, tiny_onnx[1])
    fp32 = tiny_onnx[0]
    ada_mse, ptq_mse = _output_mse(fp32, ada, images), _output_mse(fp32, ptq, images)
    assert ada_mse < 0.9 * ptq_mse, (ada_mse, ptq_mse)


@pytest.mark.slow
def test_time_budget_leaves_layers_it_did_not_reach_at_nearest_rounding(tiny_onnx, hymenoptera, tmp_path):
    from edgeport.export.formats.reconstruction import RoundingOptions

    _, details = _quantize(tiny_onnx, hymenoptera, tmp_path, RoundingOptions(iterations=50, seconds=1e-6))
    assert details["reconstruction"]["fitted_layers"] == 0 and details["reconstruction"]["layers"] == 9


@pytest.mark.parametrize("options, message", [
    ({"int8_method": "adaround", "int8_engine": "nncf"}, "--int8-method adaround .* --int8-engine onnxruntime"),
    ({"int8_method": "brecq"}, "--int8-method must be one of ptq, adaround"),
    ({"int8_time_budget": 60.0}, "--int8-time-budget .* with --int8-method adaround"),
    ({"int8_method": "adaround", "int8_time_budget": -1.0}, "--int8-time-budget .* positive"),
])
def test_int8_method_options_are_checked_before_any_work(options, message, tmp_path):
    from edgeport.export import export_bundle

    with pytest.raises(UsageError, match=message):
        export_bundle("torchvision:mobilenet_v2", tmp_path / "b", formats="onnx-int8", calib_dir=tmp_path,
                      log=lambda _: None, **options)


@pytest.mark.slow
def test_manifest_and_report_record_the_int8_method(hymenoptera, tmp_path):
    """A real export with AdaRound (a budget spent before the first layer keeps it quick)."""
    from edgeport.export import export_bundle

    report = tmp_path / "report.json"
    manifest = export_bundle("torchvision:mobilenet_v2", tmp_path / "b", formats="onnx-int8", calib_dir=hymenoptera / "train",
                             calib_size=8, int8_method="adaround", int8_time_budget=1e-6, bias_correction=False,
                             report=report, log=lambda _: None)
    entry = manifest["formats"]["onnx-int8"]
    assert entry["int8_method"] == "adaround"
    assert entry["reconstruction"]["fitted_layers"] == 0 and entry["reconstruction"]["layers"] == 53
    assert json.loads(report.read_text())["formats"]["onnx-int8"]["int8_method"] == "adaround"
