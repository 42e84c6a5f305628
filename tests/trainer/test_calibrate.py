"""The end-of-run calibration's fits (trainer/calibrate.py), on logits whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from edgeport.runtime.confidence import expected_calibration_error, ood_score, scaled_softmax
from edgeport.trainer.calibrate import KEEP, Outputs, calibrate, fit_temperature, stats_subset


def _overconfident(n: int = 4000, true_t: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), logits reported as z * true_t: a model overconfident by exactly true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, size=(n, 4))
    p = scaled_softmax(z, None)
    labels = np.array([rng.choice(4, p=row) for row in p])
    return (z * true_t).astype(np.float32), labels


def test_temperature_recovers_the_overconfidence_and_fixes_the_calibration():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(scaled_softmax(logits, None), labels)
    after = expected_calibration_error(scaled_softmax(logits, t), labels)
    assert before > 0.1 and after < 0.03


def test_threshold_keeps_the_share_of_correct_validation_images():
    logits, labels = _overconfident(seed=1)
    rng = np.random.default_rng(2)
    val = Outputs(rng.normal(size=(len(labels), 8)).astype(np.float32), logits, labels)
    for score in ("msp", "energy"):
        fitted = calibrate(val, None, 4, score)
        values = ood_score(score, logits, fitted.temperature)
        correct = logits.argmax(1) == labels
        kept = float((values[correct] >= fitted.ood_threshold).mean())
        assert kept == pytest.approx(KEEP, abs=0.01), score
    with pytest.raises(ValueError, match="training images' features"):
        calibrate(val, None, 4, "mahalanobis")
    assert calibrate(val, None, 4, None).contract_fields()["ood"] is None


def test_stats_subset_is_seeded_and_bounded():
    samples = [(f"f{i}.jpg", i % 3) for i in range(2500)]
    a, b = stats_subset(samples, 0), stats_subset(samples, 0)
    assert a == b and len(a) == 1000 and a == sorted(a, key=samples.index)
    assert stats_subset(samples[:10], 0) == samples[:10]
