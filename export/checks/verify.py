"""Post-export validation (Optimum's ``validate_model_outputs`` idea): PyTorch and the exported
model must agree on real images, or the export fails with a typed error."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from edgeport.runtime.classifier import Classifier
from edgeport.runtime.errors import VerificationError
from edgeport.runtime.preprocess import preprocess_files
from torch import nn

__all__ = ["ParityReport", "verify_parity", "ATOL", "RTOL"]

# ONNX Runtime and PyTorch differ by float rounding (~1e-5 on MobileNetV2 logits); a broken export
# differs by whole units. The bound scales with the logits' magnitude.
ATOL, RTOL = 1e-4, 1e-4


@dataclass(frozen=True)
class ParityReport:
    images: int
    skipped: int
    max_abs_logit_diff: float
    tolerance: float
    top1_agreement: float
    disagreements: tuple[str, ...]  # files whose top-1 differs by more than a near-tie

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def verify_parity(model: nn.Module, model_path: Path, images: Sequence[Path], batch_size: int = 16) -> ParityReport:
    """Run the same preprocessed tensors through PyTorch and the exported file (in batches > 1, so
    the dynamic batch axis is exercised) and compare logits and top-1."""
    clf = Classifier(model_path, batch_size=batch_size, unknown=False)
    # Undecodable files were skipped by the trainer too; verification needs decodable images only.
    batch, kept, skipped = preprocess_files(images, clf.contract)
    if not kept:
        raise VerificationError("no decodable verification images; pass real images to verify the export on")
    model = model.eval().cpu()
    expected = torch.cat([model(torch.from_numpy(batch[i : i + batch_size])) for i in range(0, len(batch), batch_size)]).numpy()
    actual = clf.logits_from_tensor(batch)
    if actual.shape != expected.shape:
        raise VerificationError(f"{model_path}: output shape {actual.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.abs(actual - expected).max())
    tolerance = ATOL + RTOL * float(np.abs(expected).max())
    top_expected, top_actual = expected.argmax(1), actual.argmax(1)
    sorted_expected = np.sort(expected, axis=1)
    margin = sorted_expected[:, -1] - sorted_expected[:, -2]
    # A flip between two classes closer than the tolerance is a tie, not an export bug.
    bad = [str(kept[i]) for i in np.flatnonzero((top_expected != top_actual) & (margin > 2 * tolerance))]
    report = ParityReport(
        images=len(kept),
        skipped=len(skipped),
        max_abs_logit_diff=diff,
        tolerance=tolerance,
        top1_agreement=float((top_expected == top_actual).mean()),
        disagreements=tuple(bad),
    )
    if diff > tolerance or bad:
        raise VerificationError(
            f"{model_path} does not reproduce PyTorch on {len(kept)} real images: max |Δlogit| {diff:.3g} "
            f"(allowed {tolerance:.3g}), top-1 agreement {report.top1_agreement:.2%}"
            + (f", first disagreement {bad[0]}" if bad else "")
            + ". The export is broken; report it with the model's architecture."
        )
    return report
