"""The session's hymenoptera fine-tune, calibrated at the end of training, exported to every format (issue #31): each
format carries the temperature and the unknown rule, has the features output, and tells ants and bees from clothing
photos it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.confidence import auroc
from edgeport.runtime.conformance import self_test_bundle
from edgeport.runtime.manifest import OOD_STATS_NAME
from edgeport.trainer.checkpoint import load_checkpoint

CLOTHING_VAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "clothing" / "val"


def test_the_checkpoint_carries_the_fitted_calibration(finetuned_run):
    ckpt = load_checkpoint(finetuned_run.best_path)
    contract = ckpt["contract"]
    assert contract.temperature is not None and contract.ood is not None
    assert contract.ood.score == "mahalanobis"
    n, d = contract.num_classes, 1280  # MobileNetV2's pooled features
    assert tuple(ckpt["ood_stats"].shape) == (d + n, d)
    metrics = json.loads(finetuned_run.metrics_path.read_text())["calibration"]
    assert metrics["temperature"] == pytest.approx(contract.temperature, abs=1e-6)
    assert metrics["val_ece_after"] <= metrics["val_ece_before"] + 0.01


def test_every_format_has_features_the_rule_and_the_stats(finetuned_bundle):
    manifest = json.loads((finetuned_bundle / "manifest.json").read_text())
    assert OOD_STATS_NAME in manifest["files"]
    assert np.load(finetuned_bundle / OOD_STATS_NAME).shape == (2, 1280)  # the class centres; the whitening is in the graph
    outputs = [o.name for o in onnx.load(finetuned_bundle / "model.onnx").graph.output]
    assert outputs == ["logits", "features"]
    contracts = set()
    for fmt in manifest["formats"]:
        clf = Classifier(finetuned_bundle, format=fmt)
        assert clf.unknown is not None and clf.unknown.stats is not None, fmt
        contracts.add(clf.contract.to_json())
    assert len(contracts) == 1  # one temperature and one rule, in every format
    report = self_test_bundle(finetuned_bundle)
    assert report.passed, report.text()


@pytest.mark.skipif(not CLOTHING_VAL.is_dir(), reason="../shared/data/clothing is not here")
def test_photos_of_another_domain_score_as_unknown(finetuned_bundle, hymenoptera):
    """The ants/bees model on clothing photos it never saw: the FP32 and the INT8 ONNX both separate them from its own
    validation photos, and flag most of them unknown while keeping most of its own."""
    inside = sorted((hymenoptera / "val").glob("*/*.jpg"))
    outside = sorted(CLOTHING_VAL.glob("*/*.jpg"))[::4]
    for fmt in ("onnx", "onnx-int8"):
        clf = Classifier(finetuned_bundle, format=fmt)
        own = clf.predict_batch(inside, top_k=1)
        other = clf.predict_batch(outside, top_k=1)
        separation = auroc(np.array([p.ood_score for p in own]), np.array([p.ood_score for p in other]))
        assert separation > 0.9, (fmt, separation)
        assert np.mean([p.unknown for p in own]) < 0.2, fmt
        assert np.mean([p.unknown for p in other]) > 0.6, fmt


def test_self_test_fails_when_a_format_lost_its_calibration(finetuned_bundle, tmp_path):
    """A kit that recorded another temperature than the served model carries (files mixed from two exports, the
    manifest re-hashed to match): the self-test names it."""
    import shutil

    from edgeport.runtime.manifest import file_entries, write_json

    bundle = tmp_path / "bundle"
    shutil.copytree(finetuned_bundle, bundle)
    kit_path = bundle / "conformance" / "kit.json"
    kit = json.loads(kit_path.read_text())
    kit["formats"]["onnx"]["calibration"]["temperature"] += 0.5
    kit_path.write_text(json.dumps(kit))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = file_entries(bundle)
    write_json(bundle / "manifest.json", manifest)
    report = self_test_bundle(bundle, formats=["onnx", "onnx-int8"])
    failed = {r.format: r.failures for r in report.results}
    assert any("differ from the kit's" in f for f in failed["onnx"]) and not failed["onnx-int8"]
