"""INT8 formats: really quantized, contract intact, close to FP32 on real images."""

import json

import numpy as np
import pytest
from edgeport.export.formats.calibration import select_calibration_images
from edgeport.export.formats.int8_graph import check_really_quantized, conv_group
from edgeport.export.formats.int8_scheme import choose_scheme
from edgeport.runtime import Classifier, VerificationError
from edgeport.runtime.errors import CalibrationError, UsageError

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
    with pytest.raises(UsageError, match="--target-cpu"):
        choose_scheme("riscv", cpu)


def _one_qlinearconv(group: int, channels: int = 32):
    """A real onnxruntime session of one 3×3 QLinearConv whose exact output is known."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    values = {"xs": np.float32(0.01), "xz": np.uint8(0), "w": np.full((channels, channels // group, 3, 3), -127, np.int8),
              "ws": np.full(channels, 0.01, np.float32), "wz": np.zeros(channels, np.int8),
              "ys": np.float32(10.0), "yz": np.uint8(255)}
    node = helper.make_node("QLinearConv", ["x", *values], ["y"], group=group, pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, channels, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.full((1, channels, 8, 8), 255, np.uint8)
    got = (float(session.run(None, {"x": x})[0][0, 0, 4, 4]) - 255) * 10
    exact = 255 * -127 * 9 * (channels // group) * 0.01 * 0.01
    return got, exact


def test_only_gemm_kernels_saturate_so_depthwise_weights_keep_8_bits():
    """Why ``depthwise_weight_overrides`` exists: with full-range U8S8 operands onnxruntime's depthwise
    kernel is exact (32-bit accumulation) while a dense convolution, on a CPU without VNNI, saturates."""
    depthwise, exact = _one_qlinearconv(group=32)
    assert abs(depthwise - exact) <= 5, (depthwise, exact)  # within half an output step of 10
    dense, exact = _one_qlinearconv(group=1)
    if choose_scheme("host").reduce_range:
        assert dense > 0.6 * exact, (dense, exact)  # saturated: well short of the exact (negative) sum
    else:
        assert abs(dense - exact) <= 5, (dense, exact)


def test_nncf_gets_the_scheme_of_the_cpu():
    """7-bit weights where U8S8 saturates (NNCF calls it overflow_fix), full 8 bits on VNNI."""
    from edgeport.export.formats.nncf_int8 import _nncf_parameters
    from nncf.quantization.advanced_parameters import OverflowFix

    assert _nncf_parameters(choose_scheme("avx2"))["advanced_parameters"].overflow_fix == OverflowFix.ENABLE
    assert _nncf_parameters(choose_scheme("vnni"))["advanced_parameters"].overflow_fix == OverflowFix.DISABLE


def test_onnxruntime_options_are_refused_with_the_nncf_engine(tmp_path):
    from edgeport.export import export_bundle

    with pytest.raises(UsageError, match="--calib-method .* --int8-engine onnxruntime"):
        export_bundle("torchvision:mobilenet_v2", tmp_path / "b", formats="onnx-int8", calib_dir=tmp_path,
                      int8_engine="nncf", calib_method="entropy", log=lambda _: None)


def test_every_format_carries_the_same_contract(finetuned_bundle):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    assert list(manifest["formats"]) == ["onnx", "onnx-int8", "openvino", "openvino-int8"]
    contracts = {fmt: Classifier(finetuned_bundle, format=fmt).contract for fmt in manifest["formats"]}
    assert len(set(contracts.values())) == 1
    assert contracts["onnx"].to_dict() == manifest["contract"]


def test_int8_files_are_really_quantized_and_smaller(finetuned_bundle):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    entry = manifest["formats"]["onnx-int8"]
    assert entry["engine"] == "onnxruntime" and entry["calibration"]["images"] == 50
    assert entry["int8_method"] == "ptq" and manifest["formats"]["openvino-int8"]["int8_method"] == "nncf-ptq"
    assert entry["bias_correction"]["layers"] == 53  # MobileNetV2: 52 convolutions + the classifier
    assert entry["quantized_ops"]["DequantizeLinear"] > 50 and entry["size_ratio_vs_fp32"] < 0.35
    assert entry["scheme"]["target_cpu"] in ("avx2", "avx512", "vnni", "arm64")
    int8_weights = _weights_by_layer_kind(finetuned_bundle / "model.int8.onnx")
    if entry["scheme"]["reduce_range"]:  # 7-bit weights where the GEMM kernels saturate, 8 bits in depthwise ones
        assert entry["depthwise_8bit_weights"] == 17
        assert np.abs(int8_weights["dense"]).max() <= 64  # onnxruntime's symmetric 7 bits: 255·64·2 < 2¹⁵
        assert np.abs(int8_weights["depthwise"]).max() > 64
    else:
        assert entry["depthwise_8bit_weights"] == 0
    assert manifest["files"]["openvino-int8/model.bin"]["bytes"] < 0.35 * manifest["files"]["openvino/model.bin"]["bytes"]
    xml = (finetuned_bundle / "openvino-int8" / "model.xml").read_text()
    assert 'type="FakeQuantize"' in xml or 'element_type="i8"' in xml or 'element_type="u8"' in xml
    with pytest.raises(VerificationError, match="no quantized operators"):
        check_really_quantized(finetuned_bundle / "model.onnx", finetuned_bundle / "model.onnx")


def test_the_standardized_heads_scale_is_quantized_per_channel(finetuned_bundle):
    """The head's fixed standardisation is a BatchNormalization whose scale is 1-D: quantized along its only axis,
    not per tensor after onnxruntime's "Axis 1 is out-of-range" warning (its default axis for the op)."""
    import onnx

    model = onnx.load(finetuned_bundle / "model.int8.onnx")
    init = {i.name: i for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    (norm,) = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    scale = producer[norm.input[1]]
    assert scale.op_type == "DequantizeLinear"
    assert list(init[scale.input[1]].dims) == [1280] and {a.name: a.i for a in scale.attribute}.get("axis") == 0


def _weights_by_layer_kind(path):
    """The INT8 weight values of a QDQ model's convolutions, depthwise apart from the rest."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    kinds: dict[str, list] = {"dense": [], "depthwise": []}
    for node in model.graph.node:
        if node.op_type == "Conv":
            weights = init[producer[node.input[1]].input[0]]
            kinds["depthwise" if conv_group(node) > 1 else "dense"].append(weights.ravel())
    return {kind: np.concatenate(values) for kind, values in kinds.items()}


@pytest.mark.parametrize("fmt", INT8_FORMATS)
def test_int8_agrees_with_fp32_on_the_val_photos(finetuned_bundle, hymenoptera_val_jpegs, fmt):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    measured = manifest["verification"][fmt]
    assert measured["images"] == 153 and measured["latency_ms_p50"] > 0
    # The export measured on the contract's exact preprocessing; compare like with like.
    fp32 = Classifier(finetuned_bundle, exact_preprocess=True).scores(hymenoptera_val_jpegs).argmax(1)
    int8 = Classifier(finetuned_bundle, format=fmt, exact_preprocess=True).scores(hymenoptera_val_jpegs).argmax(1)
    agreement = float((fp32 == int8).mean())
    assert agreement == pytest.approx(measured["top1_agreement_vs_fp32"])
    assert agreement >= 0.97, f"{fmt} agrees with FP32 on only {agreement:.1%}"  # the target


def test_bias_correction_moves_int8_back_towards_fp32(finetuned_bundle, hymenoptera, hymenoptera_val_jpegs, tmp_path):
    """Same quantize_static model with and without the correction: the logits' mean on the calibration
    images must move towards FP32's, and top-1 agreement on the val photos must not get worse."""
    from edgeport.export.formats.onnx_int8 import quantize_onnx
    from edgeport.runtime.preprocess import preprocess_files

    fp32 = Classifier(finetuned_bundle, exact_preprocess=True)
    calib = select_calibration_images(hymenoptera / "train", 20)
    calib_tensors = preprocess_files(calib, fp32.contract)[0]
    results = {}
    for corrected in (False, True):
        path = tmp_path / f"corrected-{corrected}.onnx"
        details = quantize_onnx(finetuned_bundle / "model.onnx", path, fp32.contract, calib, choose_scheme("host"),
                                bias_correction=corrected)
        assert (details["bias_correction"] is not None) == corrected
        int8 = Classifier(path, exact_preprocess=True, unknown=False)  # a bare file: logits only, no bundle stats
        shift = np.abs(int8.logits_from_tensor(calib_tensors).mean(0) - fp32.logits_from_tensor(calib_tensors).mean(0))
        agree = float((int8.scores(hymenoptera_val_jpegs).argmax(1) == fp32.scores(hymenoptera_val_jpegs).argmax(1)).mean())
        results[corrected] = (float(shift.max()), agree)
    assert results[True][0] < results[False][0], results
    assert results[True][1] >= results[False][1], results


def test_calibration_images_are_spread_and_stable(hymenoptera, tmp_path):
    a = select_calibration_images(hymenoptera / "train", 20)
    assert a == select_calibration_images(hymenoptera / "train", 20) and len(set(a)) == 20
    assert {p.parent.name for p in a} == {"ants", "bees"}
    with pytest.raises(CalibrationError, match="holds no images"):
        select_calibration_images(tmp_path, 5)


def test_int8_needs_calibration_images(finetuned_run, tmp_path):
    from edgeport.export import export_bundle

    with pytest.raises(CalibrationError, match="onnx-int8 need --calib DIR"):
        export_bundle(str(finetuned_run.best_path), tmp_path / "b", formats="onnx-int8", log=lambda _: None)


@pytest.mark.slow
def test_accuracy_control_returns_sensitive_operations_to_float(hymenoptera, tmp_path, monkeypatch):
    """ImageNet MobileNetV2 on 20 calibration images misses a zero-point budget on 24 unlabelled
    photos; NNCF's accuracy control (bounded to one operation here, to keep the test short) must
    return an operation to float, the manifest/report must name it, and the gate must judge the result."""
    import onnx
    from edgeport.export import export_bundle
    from edgeport.export.formats import nncf_int8
    from edgeport.runtime.errors import AccuracyGateError

    monkeypatch.setattr(nncf_int8, "MAX_FLOAT_OPERATIONS", 1)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for cls in ("ants", "bees"):
        for photo in sorted((hymenoptera / "val" / cls).glob("*.jpg"))[:12]:
            (eval_dir / f"{cls}_{photo.name}").symlink_to(photo)
    report = tmp_path / "report.json"
    try:
        export_bundle("torchvision:mobilenet_v2", tmp_path / "b", formats="onnx-int8", calib_dir=hymenoptera / "train",
                      calib_size=20, eval_dir=eval_dir, max_drop=0.0, int8_engine="nncf", report=report,
                      log=lambda _: None)
        passed = True
    except AccuracyGateError:
        passed = False
    row = json.loads(report.read_text())["formats"]["onnx-int8"]
    control = row["accuracy_control"]
    assert control["metric"] == "top-1 agreement with FP32" and control["eval_images"] == 24
    assert len(control["float_nodes"]) == 1, control
    assert (row["gates"]["accuracy"] == "pass") == passed == (row["drop_vs_torch_pp"] <= 0)
    if passed:  # the bundle's INT8 model really runs that operation in float
        model = onnx.load(tmp_path / "b" / "model.int8.onnx")
        assert nncf_int8.float_compute_nodes_onnx(model) == control["float_nodes"]


def test_undecodable_calibration_images_are_an_error_for_every_quantizer(finetuned_bundle, hymenoptera_val_jpegs, tmp_path):
    """All three INT8 builders share calibration_tensors: none decodable → a clear error, not an NNCF crash."""
    from edgeport.export.formats.calibration import calibration_tensors

    bad = tmp_path / "not_a_photo.jpg"
    bad.write_text("no JPEG here")
    contract = Classifier(finetuned_bundle).contract
    with pytest.raises(CalibrationError, match="--calib"):  # a data error (exit 2), not "does not reproduce PyTorch"
        calibration_tensors([bad], contract)
    tensors, details = calibration_tensors([hymenoptera_val_jpegs[0], bad], contract)
    assert tensors.shape == (1, 3, 224, 224) and details["images"] == 1
    assert len(details["skipped"]) == 1 and details["skipped"][0].startswith(str(bad))
