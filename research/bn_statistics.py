"""Which BatchNorm statistics a frozen body should normalize with: ImageNet's, or statistics recomputed on
the training photos (AdaBN, Li et al. 2016), scored by the linear probe on the resulting features.

    python -m research.bn_statistics [DATA_DIR] [--variants original,low-res-24,upside-down] [--out build/bn_statistics]

The default recipe keeps ImageNet's statistics in every frozen BatchNorm layer (``train_bn`` off); ``full`` lets them
follow the training batches from the first step. On photos unlike ImageNet's (a variant made from DATA_DIR, as
``research.train_strategies`` makes them) the recomputed statistics are the ones that describe the data, so they
might be expected to help. This measures it without training: features of the train and val photos (eval transform)
through the ImageNet body, once as it is and once after a pass over the training photos in train mode with
cumulative running statistics, then the probe's head (L2 by repeated 3-fold log-loss, as ``edge-train`` picks it)
scored on val.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.trainer.data import ImageListDataset, collate_with_failures, scan_image_folder
from edgeport.trainer.head_init import choose_l2, fit_logistic
from edgeport.trainer.models import arch_contract, build_pretrained
from edgeport.trainer.transforms import eval_transform
from torch import nn
from torch.utils.data import DataLoader

from .common import hymenoptera_dir
from .head_features import accuracy, features, standardized
from .train_strategies import low_res, upside_down


def variant_folder(data: Path, variant: str, out: Path) -> Path:
    if variant == "original":
        return data
    if variant == "upside-down":
        return upside_down(data, out)
    if variant.startswith("low-res-"):
        return low_res(data, int(variant.removeprefix("low-res-")), out)
    raise SystemExit(f"unknown variant {variant!r}: original, low-res-N or upside-down")


def recompute_statistics(model: nn.Module, samples: list, contract: PreprocessContract) -> None:
    """AdaBN: every BatchNorm's running mean and variance replaced by their average over the photos, weights untouched
    (torch's ``swa_utils.update_bn``: train mode, cumulative averages; photos that failed to decode left out)."""
    dataset = ImageListDataset(samples, eval_transform(contract), blank=torch.zeros(3, *contract.input_size))
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_with_failures)
    torch.optim.swa_utils.update_bn((x[y >= 0] for x, y, _ in loader if (y >= 0).any()), model)


def probe(model: nn.Module, split, contract: PreprocessContract) -> dict:
    (xt, yt), (xv, yv) = features(model, split.train, contract), features(model, split.val, contract)
    train, val = standardized(xt, xv)
    l2, cv_loss, cv_accuracy = choose_l2(train, yt, len(split.classes), seed=0)
    w, b = fit_logistic(train, yt, len(split.classes), l2)
    return {"l2": l2, "cv_accuracy": cv_accuracy, "val_accuracy": accuracy(w, b, val, yv),
            "val_loss": nn.functional.cross_entropy(val @ w.T + b, yv).item(), "train": len(yt), "val": len(yv)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", default=None, help="[default: hymenoptera]")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--variants", default="original,low-res-24,upside-down")
    parser.add_argument("--out", type=Path, default=Path("build/bn_statistics"))
    args = parser.parse_args()
    data = args.data or hymenoptera_dir()
    rows = []
    lines = ["| photos | train / val | BatchNorm statistics | probe val accuracy % | val loss | L2 |",
             "|---|---|---|---:|---:|---:|"]
    for variant in args.variants.split(","):
        start = time.perf_counter()
        split = scan_image_folder(variant_folder(data, variant, args.out))
        contract = PreprocessContract(**{**arch_contract(args.arch).to_dict(), "labels": split.classes})
        model = build_pretrained(args.arch).eval()
        for statistics in ("ImageNet", "recomputed on the train photos"):
            if statistics != "ImageNet":
                recompute_statistics(model, split.train, contract)
            row = {"variant": variant, "statistics": statistics, **probe(model, split, contract)}
            rows.append(row)
            lines.append(f"| {variant} | {row['train']} / {row['val']} | {statistics} | {100 * row['val_accuracy']:.2f} | "
                         f"{row['val_loss']:.3f} | {row['l2']:g} |")
            print(lines[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = "\n".join(lines)
    (args.out / "results.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n" + table)


if __name__ == "__main__":
    main()
