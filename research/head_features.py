"""Why the default head standardizes its features: the linear probe and one epoch of head training from it,
on raw against standardized features of the frozen ImageNet body, across the LR × batch grid of research/vs_fastai.

    python -m research.head_features [--arch mobilenet_v2] [--seeds 0,1,2] [--out build/head_features]

Features: what the head receives for each hymenoptera photo (eval transform: Resize 256 → CenterCrop 224), computed
once. Per feature layout (raw; standardized with the training photos' mean and variance, as ``head_init`` sets them):
the probe's val accuracy (L2 by repeated 3-fold log-loss, as edge-train picks it), then, from that probe, one epoch of
AdamW (weight decay 0.01) with the recipe's one-cycle shape at each LR and batch, as a head-only epoch after the probe
runs it (``--freeze-epochs 2`` or more: every frozen epoch after the probe's own starts from it), but on the
fixed features (no augmentation): val accuracy after it, mean over the seeds' shuffles. A head whose accuracy falls
after an epoch at an LR a user picks is thrown off its optimum by the optimizer, not by the data.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import fmean

import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.trainer.data import ImageListDataset, collate_with_failures, scan_image_folder
from edgeport.trainer.head_init import choose_l2, fit_logistic, head_inputs, standardization
from edgeport.trainer.models import arch_contract, build_pretrained
from edgeport.trainer.recipe import DEFAULT
from edgeport.trainer.transforms import eval_transform
from torch import nn
from torch.utils.data import DataLoader

from .common import hymenoptera_dir

LRS = (1e-3, 2e-3, 5e-3, 1e-2)
BATCHES = (16, 32)


def features(model: nn.Module, samples: list, contract: PreprocessContract) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input for every decodable photo (eval transform), as the linear probe computes it."""
    dataset = ImageListDataset(samples, eval_transform(contract), blank=torch.zeros(3, *contract.input_size))
    x, y, _ = head_inputs(model, DataLoader(dataset, batch_size=32, collate_fn=collate_with_failures),
                          torch.device("cpu"), progress=False)
    return x, y


def standardized(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and val features standardized with the training photos' statistics, as the standardized head's
    ``BatchNorm1d`` applies them (``head_init.standardization``)."""
    eps = nn.BatchNorm1d(1).eps
    mean, var, train = standardization(train, eps)
    return train, (val - mean) / (var + eps).sqrt()


def accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return ((x @ w.T + b).argmax(1) == y).float().mean().item()


def one_epoch(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float, batch: int,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen phase's optimizer and schedule (``DEFAULT.frozen``) for one epoch over fixed features."""
    head = nn.Linear(x.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    optimizer = torch.optim.AdamW(head.parameters(), weight_decay=DEFAULT.weight_decay)
    steps = max(1, len(y) // batch)  # drop_last, as the training loader
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=DEFAULT.frozen.pct_start,
                                                   div_factor=DEFAULT.frozen.div, final_div_factor=DEFAULT.frozen.final_div)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for i in range(steps):
        pick = order[i * batch:(i + 1) * batch]
        loss = nn.functional.cross_entropy(head(x[pick]), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return head.weight.detach(), head.bias.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("build/head_features"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    split = scan_image_folder(hymenoptera_dir(), valid_pct=0.2, seed=0)
    contract = PreprocessContract(**{**arch_contract(args.arch).to_dict(), "labels": split.classes})
    model = build_pretrained(args.arch).eval()
    (xt, yt), (xv, yv) = features(model, split.train, contract), features(model, split.val, contract)
    layouts = {"raw": (xt, xv), "standardized": standardized(xt, xv)}
    k = len(split.classes)
    results: dict[str, dict] = {}
    lines = ["| features | probe | " + " | ".join(f"{lr:g} / {b}" for lr in LRS for b in BATCHES) + " | mean |",
             "|---|---:|" + "---:|" * (len(LRS) * len(BATCHES) + 1)]
    for name, (train, val) in layouts.items():
        l2, _, _ = choose_l2(train, yt, k, seed=0)
        w, b = fit_logistic(train, yt, k, l2)
        after = {f"{lr:g}/{batch}": fmean(accuracy(*one_epoch(w, b, train, yt, lr, batch, s), val, yv) for s in seeds)
                 for lr in LRS for batch in BATCHES}
        results[name] = {"l2": l2, "probe": accuracy(w, b, val, yv), "after_one_epoch": after}
        lines.append(f"| {name} (L2 {l2:g}) | {100 * results[name]['probe']:.2f} | "
                     + " | ".join(f"{100 * a:.2f}" for a in after.values()) + f" | {100 * fmean(after.values()):.2f} |")
    table = "\n".join(lines)
    command = f"python -m research.head_features --arch {args.arch} --seeds {args.seeds}"
    note = (f"Val accuracy in % on {len(yv)} photos ({len(yt)} train), {args.arch} features ({xt.shape[1]}); after one "
            f"epoch: mean over seeds {args.seeds}. Mean raw feature {xt.mean():.3f}, "
            f"{time.perf_counter() - start:.0f} s.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(f"`{command}`\n\n{table}\n\n{note}\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps({"command": command, "results": results}, indent=1))
    print(f"{table}\n\n{note}")


if __name__ == "__main__":
    main()
