"""One fastai fine-tuning run for research/vs_fastai.py; runs under the fastai venv's Python (fastai and torch only).

    python research/fastai_run.py DATA --lr 1e-3|find --batch-size 16 --seed 0 --freeze-epochs 1 --epochs 2 --json OUT

fastai's own recipe as a user writes it: ``ImageDataLoaders.from_folder`` (train/ and val/ folders, labels from the
parent folder, ``item_tfms=Resize(224)``, no batch transforms), ``vision_learner(dls, mobilenet_v2)``, then
``fine_tune``. fastai 2.8 has no ``model_meta`` for torchvision's MobileNetV2 and finds no pooling layer to cut at
(StopIteration; ``vision_learner``'s own ``cut=`` never reaches the model), so its meta is registered here: body =
``features`` (cut -1), fastai's default head and body/head split, and, as fastai does without meta, no Normalize.
Writes the per-epoch validation accuracy, the seconds of the fine_tune call and what it trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--lr", required=True, help="base_lr, or 'find': the valley of fastai's own lr_find")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--normalize", action="store_true",
                        help="add ImageNet Normalize (fastai adds none for a model it has no meta for)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    import fastai
    import torch
    from fastai.vision.all import (
        Callback,
        ImageDataLoaders,
        Normalize,
        Resize,
        accuracy,
        default_split,
        imagenet_stats,
        model_meta,
        set_seed,
        vision_learner,
    )
    from torchvision.models import mobilenet_v2

    class EpochLog(Callback):
        """fine_tune is two fits and Recorder.values restarts at each fit: keep every epoch's row."""

        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []

        def after_fit(self) -> None:
            names = self.recorder.metric_names[1:]  # 'epoch' is not in values; 'time' is not either (zip stops)
            self.rows += [dict(zip(names, map(float, values))) for values in self.recorder.values]

    set_seed(args.seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(args.data, train="train", valid="val", seed=args.seed, item_tfms=Resize(224),
                                       batch_tfms=[Normalize.from_stats(*imagenet_stats)] if args.normalize else None,
                                       bs=args.batch_size, num_workers=0, device=torch.device("cpu"))
    log = EpochLog()
    model_meta[mobilenet_v2] = {"cut": -1, "split": default_split}
    learn = vision_learner(dls, mobilenet_v2, metrics=accuracy, cbs=[log])
    start = time.perf_counter()
    with learn.no_bar():
        lr = learn.lr_find(show_plot=False).valley if args.lr == "find" else float(args.lr)
        found_seconds = time.perf_counter() - start
        learn.fine_tune(args.epochs, base_lr=lr, freeze_epochs=args.freeze_epochs)
    seconds = time.perf_counter() - start  # lr_find included, as edge-train's --lr auto is in its epochs' time
    odd = sorted(str(p.relative_to(args.data)) for p in [*dls.train_ds.items, *dls.valid_ds.items] if p.suffix.lower() != ".jpg")
    record = {"accuracy": [row["accuracy"] for row in log.rows], "epochs": log.rows, "fit_seconds": seconds, "lr": lr,
              "lr_find_seconds": found_seconds if args.lr == "find" else None,
              "train_images": len(dls.train_ds), "val_images": len(dls.valid_ds), "not_jpg": odd,
              "fastai": fastai.__version__, "torch": torch.__version__, "threads": torch.get_num_threads()}
    args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
