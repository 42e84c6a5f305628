"""Calibrated probabilities and "unknown" (issue #31): the numpy formulas, the contract fields, and a real onnxruntime
bundle whose model has a features output and Mahalanobis statistics (the tiny colour model: seconds to build).
The outcome on real photos, with real fine-tunes, is measured in benchmarks/README.md and in the slow export tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.confidence import (
    MahalanobisStats,
    auroc,
    expected_calibration_error,
    fpr_at_tpr,
    ood_score,
    scaled_softmax,
    softmax,
)
from edgeport.runtime.contract import OodRule, PreprocessContract
from edgeport.runtime.errors import ContractError, IntegrityError, ModelLoadError, UsageError
from edgeport.runtime.manifest import OOD_STATS_NAME
from PIL import Image

from .tiny_models import COLOURS, colour_model, write_manifest

# --- the formulas ---------------------------------------------------------------------------------------------------


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_when_it_does_not():
    # 10 predictions at confidence 0.8, 8 right: calibrated. The same at confidence 1.0 (one-hot): overconfident by 0.2.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    assert expected_calibration_error(np.tile([1.0, 0.0], (10, 1)), labels) == pytest.approx(0.2)


def test_auroc_and_fpr_at_95_tpr():
    inside, outside = np.arange(10.0, 20.0), np.arange(0.0, 10.0)
    assert auroc(inside, outside) == 1.0 and auroc(outside, inside) == 0.0
    assert auroc(np.ones(5), np.ones(7)) == pytest.approx(0.5)  # ties count half
    assert fpr_at_tpr(inside, outside) == 0.0
    assert fpr_at_tpr(np.arange(0.0, 100.0), np.arange(50.0, 60.0)) == 1.0  # every outside score clears the bar


def test_temperature_scaling_keeps_the_ranking_and_softens_the_scores():
    logits = np.array([[4.0, 1.0, 0.0]], np.float32)
    hot, cool = scaled_softmax(logits, None), scaled_softmax(logits, 2.0)
    assert np.allclose(hot, softmax(logits)) and np.allclose(cool, softmax(logits / 2))
    assert hot.argmax() == cool.argmax() and cool.max() < hot.max()


def test_energy_is_temperature_times_logsumexp():
    logits = np.array([[3.0, 1.0], [0.5, 0.2]])
    expected = 2.0 * np.log(np.exp(logits / 2.0).sum(1))
    assert np.allclose(ood_score("energy", logits, 2.0), expected, atol=1e-5)


def test_mahalanobis_distance_is_the_one_of_the_shared_covariance():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0]])
    cov = np.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, 0.3]])
    labels = np.repeat([0, 1], 2000)
    x = means[labels] + rng.multivariate_normal(np.zeros(3), cov, size=len(labels))
    stats = MahalanobisStats.fit(x, labels, 2, shrinkage=0.0)
    probe = np.array([[1.0, -1.0, 0.5], [4.0, 6.0, -0.2]])
    fitted_means = np.stack([x[labels == c].mean(0) for c in range(2)])
    centred = x - fitted_means[labels]
    inv = np.linalg.inv(centred.T @ centred / len(x))
    explicit = np.array([min((p - m) @ inv @ (p - m) for m in fitted_means) for p in probe])
    assert np.allclose(-stats.score(probe), explicit, rtol=1e-4)
    # Round trip through the bundle's one-array form
    again = MahalanobisStats.from_array(stats.to_array(), 2)
    assert np.array_equal(again.score(probe), stats.score(probe))
    with pytest.raises(ValueError, match="shape"):
        MahalanobisStats.from_array(stats.to_array()[:-1], 2)
    # What a bundle holds: the centres alone, for features the graph already whitened
    bundled = MahalanobisStats.from_array(stats.whitened().to_array(), 2)
    assert bundled.whitener is None and bundled.to_array().shape == (2, 3)
    assert np.allclose(bundled.score(probe.astype(np.float32) @ stats.whitener.T), stats.score(probe), rtol=1e-5)


# --- the contract ---------------------------------------------------------------------------------------------------


def test_contract_carries_temperature_and_unknown_rule_and_older_contracts_read_as_before():
    old = PreprocessContract(labels=("a", "b"))
    assert "temperature" not in old.to_json() and "ood" not in old.to_json()
    new = PreprocessContract(labels=("a", "b"), temperature=1.7, ood={"score": "energy", "threshold": -2.5})
    assert new.ood == OodRule("energy", -2.5)
    assert PreprocessContract.from_json(new.to_json()) == new
    for bad in ({"temperature": 0.0}, {"temperature": float("nan")}, {"ood": {"score": "vibes", "threshold": 1}},
                {"ood": {"score": "msp", "threshold": float("inf")}}, {"ood": {"score": "msp"}}, {"ood": [1]}):
        with pytest.raises(ContractError):
            PreprocessContract(labels=("a", "b"), **bad)


# --- a real bundle --------------------------------------------------------------------------------------------------


def _solid(rgb: tuple[int, int, int], path) -> str:
    Image.new("RGB", (64, 64), rgb).save(path)
    return str(path)


@pytest.fixture()
def unknown_bundle(tmp_path):
    """The colour model with a features output, temperature 2 and a Mahalanobis rule fitted on pure and near-pure
    reds, greens and blues (their normalised channel means), in a hashed bundle."""
    contract = PreprocessContract(labels=COLOURS, temperature=2.0, ood={"score": "mahalanobis", "threshold": -20.0})
    bundle = tmp_path / "bundle"
    colour_model(bundle / "model.onnx", contract=json.loads(contract.to_json()), features=True)
    rng = np.random.default_rng(0)
    mean, std = np.array(contract.mean), np.array(contract.std)
    pictures, labels = [], []
    for c in range(3):
        for _ in range(60):
            rgb = np.clip(np.eye(3)[c] * rng.uniform(0.7, 1.0) + rng.uniform(0, 0.15, 3), 0, 1)
            pictures.append((rgb - mean) / std)
            labels.append(c)
    stats = MahalanobisStats.fit(np.array(pictures), np.array(labels), 3)
    np.save(bundle / OOD_STATS_NAME, stats.to_array(), allow_pickle=False)
    return write_manifest(bundle)


def test_temperature_and_unknown_in_predictions(unknown_bundle, tmp_path):
    clf = Classifier(unknown_bundle)
    red = clf.predict(_solid((230, 10, 10), tmp_path / "red.png"))
    grey = clf.predict(_solid((128, 128, 128), tmp_path / "grey.png"))
    assert red.label == "red" and not red.unknown
    assert grey.unknown and grey.ood_score < -20.0 < red.ood_score
    # Temperature 2: the probabilities are softmax(logits / 2), the ranking unchanged
    logits = clf.logits([str(tmp_path / "red.png")])
    assert np.allclose(clf.scores([str(tmp_path / "red.png")]), softmax(logits / 2.0), atol=1e-6)
    assert red.score == pytest.approx(float(softmax(logits / 2.0).max()), abs=1e-6)
    # --unknown-below moves the threshold; --no-unknown switches the rule off
    lenient = Classifier(unknown_bundle, unknown_below=grey.ood_score - 1).predict(str(tmp_path / "grey.png"))
    assert not lenient.unknown and lenient.ood_score == pytest.approx(grey.ood_score, rel=1e-5)
    off = Classifier(unknown_bundle, unknown=False).predict(str(tmp_path / "grey.png"))
    assert not off.unknown and off.ood_score is None


def test_stream_records_carry_unknown_and_the_label_says_so(unknown_bundle, tmp_path):
    photos = [_solid((10, 230, 10), tmp_path / "green.png"), _solid((128, 128, 128), tmp_path / "grey.png")]
    result = CliRunner().invoke(predict_main, ["classify", str(unknown_bundle), *photos, "--format", "jsonl", "-k", "1"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(r["label"], r["unknown"]) for r in records] == [("green", False), ("unknown", True)]
    assert records[1]["top_k"][0]["label"] in COLOURS  # the classes' scores stay in the record
    assert records[1]["ood_score"] < -20.0
    plain = CliRunner().invoke(predict_main, ["classify", str(unknown_bundle), *photos, "--format", "jsonl", "--no-unknown"])
    assert plain.exit_code == 0 and '"unknown"' not in plain.output


def test_a_missing_or_tampered_stats_file_is_an_error_that_says_what_to_do(unknown_bundle):
    model = unknown_bundle / "model.onnx"
    with pytest.raises(ModelLoadError, match=f"needs {OOD_STATS_NAME}.*--no-unknown"):
        Classifier(model.rename(unknown_bundle.parent / "bare.onnx"))
    assert Classifier(unknown_bundle.parent / "bare.onnx", unknown=False).unknown is None
    (unknown_bundle.parent / "bare.onnx").rename(model)
    stats = np.load(unknown_bundle / OOD_STATS_NAME)
    np.save(unknown_bundle / OOD_STATS_NAME, stats * 1.01, allow_pickle=False)
    with pytest.raises(IntegrityError, match=OOD_STATS_NAME):
        Classifier(unknown_bundle)


def test_a_rule_that_needs_features_refuses_a_model_without_them(tmp_path):
    contract = PreprocessContract(labels=COLOURS, ood={"score": "mahalanobis", "threshold": 0.0})
    path = colour_model(tmp_path / "m.onnx", contract=json.loads(contract.to_json()))
    with pytest.raises(ModelLoadError, match="'features' output"):
        Classifier(path)


def test_unknown_below_on_a_model_without_a_rule_is_a_usage_error(tmp_path):
    path = colour_model(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="no unknown score.*--threshold"):
        Classifier(path, unknown_below=0.5)


def test_msp_and_energy_rules_need_no_features(tmp_path):
    for score, threshold in (("msp", 0.9), ("energy", 5.0)):
        contract = PreprocessContract(labels=COLOURS, ood={"score": score, "threshold": threshold})
        path = colour_model(tmp_path / f"{score}.onnx", contract=json.loads(contract.to_json()))
        clf = Classifier(path)
        grey = clf.predict(_solid((128, 128, 128), tmp_path / "grey.png"))
        red = clf.predict(_solid((250, 0, 0), tmp_path / "red.png"))
        assert grey.unknown and not red.unknown, score


def test_capture_keeps_what_the_model_calls_unknown_even_when_it_is_sure_of_a_class(unknown_bundle, tmp_path):
    from edgeport.runtime.frames import Frame
    from edgeport.runtime.service.capture import Capture

    clf = Classifier(unknown_bundle)
    grey = np.full((64, 64, 3), 128, np.uint8)
    frame = Frame("cam", image=grey, color="rgb", index=0, timestamp=0.0, source_id="cam")
    result = clf.classify_prepared([clf.prepare(frame)], top_k=3)[0]
    assert result.unknown and result.top[0][1] > 0.5  # sure enough for --capture-below 0.5 alone to skip it
    capture = Capture(tmp_path / "cap", below=0.5, rate=10)
    assert "unknown" in capture.why(result)
    jpeg = capture.consider(frame, result)
    sidecar = json.loads(jpeg.with_suffix(".json").read_text())
    assert sidecar["unknown"] is True and sidecar["ood_score"] == pytest.approx(result.ood_score)


def test_stats_for_other_features_are_refused_at_load(unknown_bundle):
    np.save(unknown_bundle / OOD_STATS_NAME, np.eye(4 + 3, 4, dtype=np.float32), allow_pickle=False)
    write_manifest(unknown_bundle)  # re-hashed: a consistent bundle whose statistics do not fit its model
    with pytest.raises(ModelLoadError, match="is for 4 features"):
        Classifier(unknown_bundle)
