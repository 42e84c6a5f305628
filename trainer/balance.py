"""``--balance``: class imbalance handled in the loss (``weights``) or in the batches (``sampler``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from .choices import BALANCE_MODES

__all__ = ["BALANCE_MODES", "class_weights", "balanced_sampler"]


def _counts(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    counts = Counter(labels)
    return torch.tensor([max(counts.get(c, 0), 1) for c in range(num_classes)], dtype=torch.float64)


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-class loss weights n / (k · count[c]): 1.0 for every class of a balanced set."""
    return (len(labels) / (num_classes * _counts(labels, num_classes))).float()


def balanced_sampler(labels: Sequence[int], num_classes: int, seed: int) -> WeightedRandomSampler:
    """One epoch = len(labels) draws with replacement, each class equally likely; seeded, and re-seeded per
    epoch by ``set_epoch`` like ``DistributedSampler`` so that ``--resume`` and repeated runs draw the same."""
    per_class = 1.0 / _counts(labels, num_classes)
    return _EpochSampler(per_class[torch.tensor(list(labels))], len(labels), seed)


class _EpochSampler(WeightedRandomSampler):
    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int) -> None:
        self.seed = seed
        super().__init__(weights, num_samples, replacement=True, generator=torch.Generator().manual_seed(seed))

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)
