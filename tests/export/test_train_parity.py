"""The spine end to end: fine-tune on hymenoptera, export, and classify the raw val JPEGs on device."""

import json

import torch
from click.testing import CliRunner
from edgeport.runtime import Classifier
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.preprocess import load_image
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.models import build_for_checkpoint
from edgeport.trainer.transforms import eval_transform


def test_checkpoint_is_plain_data_with_contract_and_labels(finetuned_run):
    raw = torch.load(finetuned_run.best_path, weights_only=True)  # no pickle of code objects
    assert raw["arch"] == "mobilenet_v2" and raw["contract"]["labels"] == ["ants", "bees"]
    assert len(raw["val_files"]) == 153
    metrics = json.loads(finetuned_run.metrics_path.read_text())
    assert metrics["best"]["val_accuracy"] == raw["metrics"]["val_accuracy"]
    assert [row["phase"] for row in metrics["history"]] == ["probe", "unfrozen"]


def test_brief_fine_tune_learns_from_real_weights(finetuned_run):
    # Two CPU epochs from ImageNet weights; random weights stay near 50-60% here.
    assert finetuned_run.best["val_accuracy"] >= 0.88, finetuned_run.history


def test_device_path_agrees_with_pytorch_on_every_val_jpeg(finetuned_run, finetuned_bundle, hymenoptera_val_jpegs):
    """torchvision eval transform + PyTorch vs the runtime's numpy/Pillow path + onnxruntime, per file."""
    ckpt = load_checkpoint(finetuned_run.best_path)
    model = build_for_checkpoint(ckpt["arch"], ckpt["contract"].num_classes, ckpt["state_dict"], ckpt["head"])
    transform = eval_transform(ckpt["contract"])
    with torch.no_grad():
        batch = torch.stack([transform(load_image(p)) for p in hymenoptera_val_jpegs])
        torch_top1 = [ckpt["contract"].labels[i] for i in model(batch).argmax(1).tolist()]

    clf = Classifier(finetuned_bundle)
    api_top1 = [p.label for p in clf.predict_batch(hymenoptera_val_jpegs, top_k=1)]
    assert api_top1 == torch_top1
    openvino = Classifier(finetuned_bundle, backend="openvino", threads=2)
    assert openvino.format == "openvino" and openvino.model_path.suffix == ".xml"
    assert [p.label for p in openvino.predict_batch(hymenoptera_val_jpegs, top_k=1)] == torch_top1

    args = [str(finetuned_bundle), *map(str, hymenoptera_val_jpegs), "--format", "jsonl", "--batch", "16"]
    result = CliRunner().invoke(predict_main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["top_k"][0]["label"] for r in records] == torch_top1
    accuracy = sum(label == p.parent.name for label, p in zip(api_top1, hymenoptera_val_jpegs)) / len(api_top1)
    assert abs(accuracy - finetuned_run.best["val_accuracy"]) < 1e-9
