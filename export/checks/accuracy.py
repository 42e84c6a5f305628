"""Accuracy of a deployed format against a reference (PyTorch, or FP32): the one function every
report uses, with one sign convention: ``drop_vs_torch_pp`` = reference − format, in top-1 points
(positive = the format is worse), the same quantity ``--max-drop`` bounds."""

from __future__ import annotations

from typing import Any

import numpy as np
from edgeport.runtime.confidence import expected_calibration_error, scaled_softmax, softmax

__all__ = ["accuracy_against"]


def accuracy_against(logits: np.ndarray, ref: np.ndarray | None, targets: np.ndarray | None,
                     temperature: float | None = None) -> dict[str, Any]:
    """Top-1 on ``targets`` (None when unlabelled) and, against the reference logits ``ref``: top-1
    agreement, max |Δlogit| and the drop in points. Unlabelled, the drop is the share of images whose
    top-1 differs from the reference's (an ImageNet model on arbitrary photos). Labelled, the expected
    calibration error of the plain softmax and, with the model's ``temperature``, of the calibrated one."""
    top1 = logits.argmax(1)
    acc = float((top1 == targets).mean()) if targets is not None else None
    ece = expected_calibration_error(softmax(logits), targets) if targets is not None else None
    calibrated = (expected_calibration_error(scaled_softmax(logits, temperature), targets)
                  if targets is not None and temperature is not None else None)
    out: dict[str, Any] = {"top1": acc, "agreement_vs_torch": None, "drop_vs_torch_pp": None, "max_abs_logit_diff_vs_torch": None,
                           "ece": ece, "ece_calibrated": calibrated}
    if ref is None:
        return out
    agreement = float((top1 == ref.argmax(1)).mean())
    ref_acc = float((ref.argmax(1) == targets).mean()) if targets is not None else None
    drop = (ref_acc - acc) * 100 if targets is not None else (1 - agreement) * 100
    out.update(agreement_vs_torch=agreement, drop_vs_torch_pp=round(drop, 4),
               max_abs_logit_diff_vs_torch=float(np.abs(logits - ref).max()))
    return out
