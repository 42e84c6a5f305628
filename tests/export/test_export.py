"""ONNX export: the contract travels in the file, the batch axis is dynamic, PyTorch parity is enforced."""

import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from edgeport.export import export_bundle
from edgeport.export.checks.verify import verify_parity
from edgeport.export.formats.onnx_fp32 import read_contract
from edgeport.runtime import Classifier, ModelLoadError, VerificationError
from edgeport.runtime.errors import UsageError
from edgeport.runtime.manifest import sha256_file
from edgeport.trainer.models import build_pretrained


def test_onnx_file_carries_the_contract_and_a_dynamic_batch(imagenet_bundle):
    proto = onnx.load(imagenet_bundle / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    contract = read_contract(proto)
    manifest = json.loads((imagenet_bundle / "manifest.json").read_text())
    assert contract is not None and contract.to_dict() == manifest["contract"]
    assert (contract.input_size, contract.resize_size, contract.interpolation) == ((224, 224), 256, "bilinear")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    clf = Classifier(imagenet_bundle)
    for n in (1, 3, 8):
        assert clf.logits_from_tensor(np.zeros((n, 3, 224, 224), np.float32)).shape == (n, 1000)


def test_no_absolute_paths_or_stack_traces_inside_the_model(imagenet_bundle):
    data = (imagenet_bundle / "model.onnx").read_bytes()
    for needle in (str(imagenet_bundle), sys.prefix, os.getcwd(), "site-packages", 'File "', "/tmp/", "/home/"):
        assert needle.encode() not in data, needle


def test_verification_catches_a_model_that_differs(imagenet_bundle, sample_photos):
    torch.manual_seed(0)
    altered = build_pretrained("mobilenet_v2").eval()
    with torch.no_grad():
        altered.classifier[1].weight.add_(torch.randn_like(altered.classifier[1].weight) * 0.05)
    with pytest.raises(VerificationError, match="does not reproduce PyTorch"):
        verify_parity(altered, imagenet_bundle / "model.onnx", sample_photos)
    report = verify_parity(build_pretrained("mobilenet_v2"), imagenet_bundle / "model.onnx", sample_photos)
    assert report.images == len(sample_photos) and report.top1_agreement == 1.0
    assert report.max_abs_logit_diff <= report.tolerance


def test_fine_tuned_export_is_reproducible_and_replaces_atomically(finetuned_run, finetuned_bundle, tmp_path):
    target = tmp_path / "bundle"
    export_bundle(str(finetuned_run.best_path), target, log=lambda _: None)
    first = sha256_file(target / "model.onnx")
    assert first == sha256_file(finetuned_bundle / "model.onnx")  # same checkpoint, same bytes
    export_bundle(str(finetuned_run.best_path), target, log=lambda _: None)  # over an existing bundle
    assert sha256_file(target / "model.onnx") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or backup left behind
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["source"]["checkpoint_sha256"] == sha256_file(finetuned_run.best_path)
    assert manifest["contract"]["labels"] == ["ants", "bees"]


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_bundle(finetuned_run, tmp_path):
    precious = tmp_path / "mydata"
    precious.mkdir()
    (precious / "keep.txt").write_text("do not delete")
    with pytest.raises(ModelLoadError, match="not an edgeport bundle"):
        export_bundle(str(finetuned_run.best_path), precious, log=lambda _: None)
    assert (precious / "keep.txt").read_text() == "do not delete"


def test_openvino_ir_carries_the_contract_and_is_verified(finetuned_bundle, sample_photos):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    entry = manifest["formats"]["openvino"]
    assert entry["backend"] == "openvino" and entry["files"] == ["openvino/model.xml", "openvino/model.bin"]
    assert {"openvino/model.xml", "openvino/model.bin"} <= set(manifest["files"])
    assert manifest["verification"]["openvino"]["top1_agreement"] == 1.0
    ir = Classifier(finetuned_bundle / "openvino" / "model.xml")  # the IR alone, contract from rt_info
    assert ir.backend == "openvino" and ir.labels == ("ants", "bees")
    onnx_clf = Classifier(finetuned_bundle)
    np.testing.assert_allclose(ir.scores(sample_photos), onnx_clf.scores(sample_photos), atol=1e-4)


def test_unknown_format_is_refused_with_the_known_ones(finetuned_run, tmp_path):
    with pytest.raises(UsageError, match="unknown format.*onnx, onnx-int8, openvino, openvino-fp16, openvino-int8"):
        export_bundle(str(finetuned_run.best_path), tmp_path / "b", formats="onnx,tflite", log=lambda _: None)
    assert not (tmp_path / "b").exists()
