"""The new head's starting point: a linear probe (LP-FT, Kumar et al., ICLR 2022).

The head is fitted as an L2-regularised multinomial logistic regression on the frozen body's features of the
training images (eval transform, BatchNorm in eval mode), the regularisation picked by repeated k-fold log-loss,
like scikit-learn's ``LogisticRegressionCV``. This fit is the recipe's first head-only epoch, in place of an epoch of
SGD on the head (``strategies.plan_phases``); without a head-only epoch it starts the head. Why: a fresh random
``nn.Linear`` gets few steps on a small set (245 photos at batch 32 are 7 per epoch) and at an LR picked for
fine-tuning it ends the frozen phase far from its optimum; the unfrozen phase then spends its steps, and the body's
pretrained features, repairing the head.
From the probe's optimum every phase starts from the best head the body allows, whatever ``--lr`` and
``--batch-size`` the user picked. Cost: one forward pass over the training images (at most ``MAX_IMAGES``).
With a "standardized" head (``models.replace_head``) the probe first sets its fixed per-feature mean and variance
from the same features, and fits the Linear in that space.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from edgeport.runtime.errors import DataError
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .data import ImageListDataset, collate_with_failures
from .distributed import Dist, shard_indices
from .lr_find import lr_find_on_features
from .models import feature_standardizer, head_entry, head_module_name
from .steps import to_device

__all__ = ["ProbeResult", "linear_probe", "head_inputs", "standardization", "fit_logistic", "choose_l2", "MAX_IMAGES",
           "L2_GRID", "FOLDS", "CV_PREDICTIONS", "MAX_REPEATS", "VAR_FLOOR"]

#: Images the probe looks at, at most (a seeded sample beyond that): the fit needs examples, not epochs.
MAX_IMAGES = 10_000
#: L2 strengths tried (half decades), on the scale of the mean cross-entropy: loss = CE + l2 / 2 · ‖W‖².
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
FOLDS = 3
#: The k-fold split is repeated (new seeded folds each time, like scikit-learn's ``RepeatedStratifiedKFold``) until
#: about this many held-out predictions score each L2, at most ``MAX_REPEATS`` times: on a few hundred images one
#: split's choice swings by a decade with the seed (on hymenoptera's 245 photos from 1e-3 to 1e-1 over 10 seeds).
CV_PREDICTIONS = 1_000
MAX_REPEATS = 5
#: Images the L2 search uses at most (a seeded sample); the final fit uses every probe image.
CV_MAX_IMAGES = 2_000
#: A standardized head's variances are floored at this share of their mean: a feature that barely varies on the
#: training images would otherwise be amplified by up to 1/sqrt(eps) ≈ 316 on a frame where it fires.
VAR_FLOOR = 1e-3


@dataclass(frozen=True)
class ProbeResult:
    images: int
    l2: float
    cv_log_loss: float | None  # None: the L2 was given (a refit takes the probe's), not searched
    cv_accuracy: float | None
    train_accuracy: float
    train_loss: float  # mean cross-entropy of the fitted head on the probe's images (the L2 term left out)
    undecodable: dict[str, str]  # files that failed to decode, on any rank, and why: left out of the fit
    seconds: float
    lr_find: dict | None  # the LR finder's sweep on the same features (lr_find.lr_find_on_features;
    # LRFindResult.to_dict); None for a refit (``l2`` given), which no LR is picked from


@torch.no_grad()
def head_inputs(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool,
                failures: dict[str, str] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the head receives (the input of its standardizer, or of its Linear; via a hook) for every decodable image
    of ``loader`` (``collate_with_failures`` batches), on the CPU: features, labels, and a mask of the loader's items
    that decoded. The files that failed, with the reason, go into ``failures``."""
    head = head_entry(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().float().cpu()))
    feats, labels, decoded = [], [], []
    model.eval()
    try:
        for x, y, failed in tqdm(loader, desc="linear probe: features", leave=False, disable=not progress):
            if failures is not None:
                failures.update(failed)
            x, y = to_device(x, y, device)
            model(x)
            keep = (y >= 0).cpu()  # -1: a file that failed to decode
            feats.append(captured.pop()[keep])
            labels.append(y.cpu()[keep])
            decoded.append(keep)
    finally:
        hook.remove()
    return torch.cat(feats), torch.cat(labels), torch.cat(decoded)


def standardization(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A standardized head's statistics of features ``x`` (mean, variance floored at ``VAR_FLOOR`` of its mean) and
    ``x`` standardized with them as its ``BatchNorm1d`` (``eps``) does."""
    mean, var = x.mean(0), x.var(0, unbiased=False)
    var = var.clamp_min(VAR_FLOOR * var.mean().item())
    return mean, var, (x - mean) / (var + eps).sqrt()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias minimising mean cross-entropy + l2/2·‖W‖² (bias unpenalised), by full-batch L-BFGS from
    ``init`` (warm start) or zeros."""
    x, y = x.float(), y.long()
    w = torch.zeros(num_classes, x.shape[1]) if init is None else init[0].float().clone()
    b = torch.zeros(num_classes) if init is None else init[1].float().clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=100, tolerance_grad=1e-5, tolerance_change=1e-9,
                                  history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach().float(), b.detach().float()


def _folds(y: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """Stratified folds: each class's indices shuffled (seeded) and dealt round-robin."""
    generator = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in y.unique().tolist():
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        for i, index in enumerate(members.tolist()):
            folds[i % k].append(index)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds if f]


def choose_l2(x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0,
              grid: tuple[float, ...] = L2_GRID) -> tuple[float, float, float]:
    """The grid's L2 with the lowest held-out log-loss over repeated k-folds; returns (l2, its log-loss, its
    accuracy)."""
    if len(y) > CV_MAX_IMAGES:  # the search's cost grows with images × classes × grid × folds; the final fit sees all
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:CV_MAX_IMAGES]
        x, y = x[pick], y[pick]
    repeats = max(1, min(MAX_REPEATS, math.ceil(CV_PREDICTIONS / len(y))))
    splits = [_folds(y, FOLDS, seed + 7919 * r) for r in range(repeats)]  # repeat 0: the folds of one k-fold
    best = (math.inf, 0.0, grid[0])
    warm: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # per fold: the previous (stronger) L2's fit
    for l2 in sorted(grid, reverse=True):
        loss_sum, correct = 0.0, 0
        for r, folds in enumerate(splits):
            for f, held in enumerate(folds):
                train = torch.ones(len(y), dtype=torch.bool)
                train[held] = False
                w, b = warm[r, f] = fit_logistic(x[train], y[train], num_classes, l2, warm.get((r, f)))
                logits = x[held] @ w.T + b
                loss_sum += nn.functional.cross_entropy(logits, y[held], reduction="sum").item()
                correct += (logits.argmax(1) == y[held]).sum().item()
        if loss_sum / (repeats * len(y)) < best[0]:
            best = (loss_sum / (repeats * len(y)), correct / (repeats * len(y)), l2)
    return best[2], best[0], best[1]


def linear_probe(model: nn.Module, dataset: ImageListDataset, num_classes: int, batch_size: int, device: torch.device,
                 ctx: Dist, seed: int, progress: bool = True, l2: float | None = None) -> ProbeResult:
    """Fit ``model``'s head in place on its body's features of ``dataset`` (eval transform, a ``blank`` for files that
    fail to decode); every rank ends with rank 0's head. ``l2``: a refit, with this strength instead of the
    cross-validated one (a body trained on these images makes their held-out folds look easy, so the search would
    under-regularize) and no LR sweep."""
    start = time.perf_counter()
    indices = list(range(len(dataset)))
    if len(indices) > MAX_IMAGES:
        indices = sorted(torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:MAX_IMAGES].tolist())
    mine = shard_indices(len(indices), ctx.rank, ctx.world_size)
    loader = DataLoader(Subset(dataset, [indices[i] for i in mine]), batch_size=max(1, batch_size),
                        collate_fn=collate_with_failures)
    failures: dict[str, str] = {}
    feats, labels, kept = head_inputs(model, loader, device, progress, failures)
    gathered = ctx.all_gather((feats, labels, torch.tensor(mine)[kept]))
    for part in ctx.all_gather(failures):
        failures.update(part)
    order = torch.cat([pos for _, _, pos in gathered]).argsort()  # the one-process order, whatever the world size
    x, y = torch.cat([f for f, _, _ in gathered])[order], torch.cat([lab for _, lab, _ in gathered])[order]
    if len(y) == 0:
        raise DataError("no training image could be decoded for the linear probe; check the data folder")
    standardizer = feature_standardizer(model)
    if standardizer is not None:  # the probe fits, and the finder sweeps, the head in the space it trains in
        mean, var, x = standardization(x, standardizer.eps)

    def fit() -> tuple[torch.Tensor, torch.Tensor, float, float | None, float | None, float, float, dict | None]:
        strength, cv_loss, cv_acc = choose_l2(x, y, num_classes, seed) if l2 is None else (l2, None, None)
        w, b = fit_logistic(x, y, num_classes, strength)
        logits = x @ w.T + b
        train_acc = (logits.argmax(1) == y).float().mean().item()
        train_loss = nn.functional.cross_entropy(logits, y).item()
        found = None if l2 is not None else lr_find_on_features(x, y, num_classes, batch_size * ctx.world_size, seed)
        return w, b, strength, cv_loss, cv_acc, train_acc, train_loss, None if found is None else found.to_dict()

    w, b, strength, cv_loss, cv_acc, train_acc, train_loss, found = ctx.broadcast(fit() if ctx.is_main else None)
    head = model.get_submodule(head_module_name(model))
    with torch.no_grad():
        if standardizer is not None:  # the same statistics on every rank: each computed them from the gathered x
            standardizer.running_mean.copy_(mean.to(standardizer.running_mean.device))
            standardizer.running_var.copy_(var.to(standardizer.running_var.device))
        head.weight.copy_(w.to(head.weight.device, head.weight.dtype))
        head.bias.copy_(b.to(head.bias.device, head.bias.dtype))
    return ProbeResult(images=len(y), l2=strength, cv_log_loss=None if cv_loss is None else round(cv_loss, 4),
                       cv_accuracy=None if cv_acc is None else round(cv_acc, 4),
                       train_accuracy=round(train_acc, 4), train_loss=train_loss, undecodable=failures,
                       seconds=round(time.perf_counter() - start, 2), lr_find=found)
