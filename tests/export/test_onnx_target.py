"""The IR version and opset of exported ONNX files follow the oldest onnxruntime devices run (#19): the
declared floor by default. The real old runtime is exercised by ``python -m tools.runtime_matrix`` in CI."""

from __future__ import annotations

import onnx
import pytest
from edgeport.export.formats.onnx_target import apply_target, declared_onnxruntime_floor, resolve_target
from edgeport.runtime.errors import UsageError


def test_the_default_target_is_the_declared_floor_and_its_onnx_release():
    target = resolve_target()
    assert target.runtime == f"onnxruntime=={declared_onnxruntime_floor()}"
    assert declared_onnxruntime_floor() == "1.17"
    assert (target.onnx_release, target.max_ir_version, target.max_opset) == ("1.15.0", 9, 20)  # onnx's VERSION_TABLE


@pytest.mark.parametrize("spec, ir, opset", [("onnxruntime==1.16", 9, 19), ("onnxruntime==1.18.1", 10, 21),
                                             ("onnxruntime==1.20", 10, 22), ("onnxruntime==1.32", 11, 23)])
def test_targets_follow_onnxruntimes_table(spec, ir, opset):
    target = resolve_target(spec)
    assert (target.max_ir_version, target.max_opset) == (ir, opset)


@pytest.mark.parametrize("spec", ["onnxruntime>=1.17", "ort==1.17", "onnxruntime==1.9"])
def test_bad_targets_are_usage_errors(spec):
    with pytest.raises(UsageError, match="--target-runtime|not supported"):
        resolve_target(spec)


def test_exported_files_carry_the_targets_ir_version(imagenet_bundle):
    """The dynamo exporter writes IR 10, which onnxruntime 1.17 refuses; the bundle's file is IR 9."""
    model = onnx.load(imagenet_bundle / "model.onnx")
    assert model.ir_version == 9
    newer = onnx.load(imagenet_bundle / "model.onnx")
    apply_target(newer, resolve_target("onnxruntime==1.22"))
    assert newer.ir_version == 9  # never raised, only capped
    with pytest.raises(UsageError, match="opset 20 of ai.onnx .* up to 19"):
        apply_target(model, resolve_target("onnxruntime==1.16"))


def test_unused_operator_domains_are_dropped_and_used_ones_kept():
    """quant_pre_process imports every onnxruntime domain (ai.onnx.ml at 5: onnxruntime 1.17 refuses the file)."""
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20), onnx.helper.make_opsetid("ai.onnx.ml", 5),
                                                         onnx.helper.make_opsetid("com.microsoft", 1)])
    apply_target(model, resolve_target())
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
