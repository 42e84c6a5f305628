"""Transfer-learning scenarios side by side: head-only vs finetune vs full, on less and less data, per recipe.

    python -m research.train_strategies [DATA_DIR] [--fractions 0.25,0.5,1 --recipes default,classic
        --strategies head,finetune,full --lr 5e-3 --full-lr 1e-4 --seeds 0 --freeze-epochs 1 --epochs 2 --low-res N
        --upside-down --device cpu --workers N --variant NAME:FIELD=VALUE[,FIELD=VALUE]]

Every strategy trains the same epochs (freeze_epochs + epochs) with the same seed and batch; ``full`` gets its own
``--full-lr`` (everything trainable from the first step needs a smaller LR than a new head). Fractions keep that
share of each class's training photos (a seeded draw) and the whole validation set, so accuracy stays comparable.
Besides best and last-epoch accuracy and wall time (scan, model, training, reports: what a user waits for), each
run reports how far fine-tuning moved the body: the relative weight change ‖W − W₀‖ / ‖W₀‖ of the body's blocks
against the ImageNet weights at the end of training (``edge-explain``'s weight-change view), as the mean over the first, middle
and last third of the blocks. ``--low-res N`` first makes every photo (train and val) a low-resolution one: its shorter
side shrunk to N pixels and blown back up, as a distant or cheap camera sees the subject. ImageNet's features fit such
photos worse, so the head alone falls short and leaves room for fine-tuning (a step towards the "dissimilar
data" scenario of transfer learning, made from the photos we have). ``--upside-down`` changes the task instead of the photos: every photo
is shown upright and turned 180°, and the classes are those two. No ImageNet class depends on which way up a photo is,
so the features hold little of it: the "task unlike ImageNet's" scenario, where the body has to learn.
``--variant bnst:update_bn_running_stats=true`` adds a recipe ``bnst``, ``default`` with those fields changed, to pick with
``--recipes``: a candidate recipe measured by the same command as the ones it would replace. A run folder's row is
reused only if it was trained with the same settings, the recipe's values included (a row trained before a
recipe change is refused, not shown as today's).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from statistics import fmean, stdev

from edgeport.trainer import TrainConfig, fit
from edgeport.trainer.checkpoint import load_run_state
from edgeport.trainer.explain.changes import weight_changes
from edgeport.trainer.loading import load_model
from edgeport.trainer.recipe import DEFAULT, RECIPES, RENAMED_FIELDS, Recipe, with_current_names
from PIL import Image

from .common import cached_row, hymenoptera_dir


def subset(data: Path, fraction: float, seed: int, out: Path) -> Path:
    """``out`` with symlinks: ``fraction`` of each class's train photos (seeded), every val photo."""
    if fraction >= 1:
        return data
    root = out / f"data-{fraction:g}-s{seed}"
    for cls_dir in sorted((data / "train").iterdir()):
        files = sorted(p for p in cls_dir.iterdir() if p.is_file())
        random.Random(f"{seed}-{cls_dir.name}").shuffle(files)
        target = root / "train" / cls_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for f in files[: max(2, math.ceil(fraction * len(files)))]:
            link = target / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    if not (root / "val").exists():
        (root / "val").symlink_to((data / "val").resolve())
    return root


def low_res(data: Path, pixels: int, out: Path) -> Path:
    """A copy of ``data`` under ``out`` (PNG) with each photo's shorter side shrunk to ``pixels`` and resized back
    (bilinear both ways); a file Pillow cannot read is copied as it is, so the trainer reports it as before."""
    root = out / f"data-lowres{pixels}"
    done = root / ".complete"
    if done.exists():
        return root
    for source in sorted(p for p in data.rglob("*") if p.is_file()):
        target = root / source.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(source) as image:
                image = image.convert("RGB")
                scale = pixels / min(image.size)
                small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                     Image.Resampling.BILINEAR)
                small.resize(image.size, Image.Resampling.BILINEAR).save(target.with_suffix(".png"))
        except (OSError, ValueError):
            shutil.copyfile(source, target)
    done.touch()
    return root


def upside_down(data: Path, out: Path) -> Path:
    """A new task made from ``data``'s photos: ``upright`` or ``upside_down``. Every readable photo appears in both
    classes (PNG both, as it is and turned 180°), named ``<class>_<stem>`` after its original class so stems of two
    classes cannot collide; train and val keep ``data``'s split, so no photo is in both."""
    root = out / "data-upside-down"
    done = root / ".complete"
    if done.exists():
        return root
    for source in sorted(p for p in data.glob("*/*/*") if p.is_file()):  # split/class/photo
        split, original_class = source.relative_to(data).parts[:2]
        try:
            with Image.open(source) as image:
                image = image.convert("RGB")
                for label, turned in (("upright", image), ("upside_down", image.rotate(180))):
                    target = root / split / label / f"{original_class}_{source.stem}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    turned.save(target)
        except (OSError, ValueError):
            print(f"skipped {source}: Pillow cannot read it")
    done.touch()
    return root


def body_change(run: Path) -> list[float]:
    """Mean relative weight change of the body's first, middle and last third of blocks (the head left out), at the
    end of training (``last.pt``: the best epoch may be the head-only one, which moved nothing)."""
    final = load_model(str(run / "best.pt"))
    final.model.load_state_dict(load_run_state(run)["model"])
    changes = [c.relative_change for c in weight_changes(final) if c.relative_change is not None]
    thirds = [changes[round(i * len(changes) / 3):round((i + 1) * len(changes) / 3)] for i in range(3)]
    return [fmean(t) for t in thirds]


def seed_means(rows: list[dict]) -> list[str]:
    """One line per fraction, recipe and strategy: best and last, mean ± sample SD over the seeds (train photos: the
    first seed's count, which the seeded draw keeps the same for every seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["fraction"], r["recipe"], r["strategy"]), []).append(r)

    def stat(values: list[float]) -> str:
        return f"{100 * fmean(values):.2f} ± {100 * stdev(values):.2f}" if len(values) > 1 else f"{100 * values[0]:.2f}"

    lines = ["| train photos | recipe | strategy | seeds | best % | last % |", "|---|---|---|---:|---:|---:|"]
    for (fraction, recipe, strategy), runs in groups.items():
        lines.append(f"| {runs[0]['train_images']} ({fraction:.0%}) | {recipe} | {strategy} | {len(runs)} | "
                     f"{stat([r['best'] for r in runs])} | {stat([r['last'] for r in runs])} |")
    return lines


def _rename_cached_fields(record: Path) -> None:
    """A row cached before a recipe field was renamed is rewritten with today's names, so it still counts."""
    if not record.exists():
        return
    row = json.loads(record.read_text())
    values = row.get("recipe_values")
    if isinstance(values, dict) and with_current_names(values) != values:
        row["recipe_values"] = with_current_names(values)
        record.write_text(json.dumps(row, indent=1))


def add_variant(spec: str) -> None:
    """``NAME:FIELD=VALUE,...`` → ``RECIPES[NAME]``, ``default`` with those fields (values read as JSON, else text)."""
    name, _, assignments = spec.partition(":")
    known = {f.name for f in fields(Recipe)} - {"name"}
    changed: dict = {}
    for assignment in filter(None, assignments.split(",")):
        field, _, text = assignment.partition("=")
        field = RENAMED_FIELDS.get(field, field)  # a command written down before a field was renamed still works
        if field not in known:
            raise SystemExit(f"--variant {spec}: {field!r} is not a recipe field; choose from {', '.join(sorted(known))}")
        try:
            changed[field] = json.loads(text)
        except json.JSONDecodeError:
            changed[field] = text
    if not name or not changed or name in RECIPES:
        raise SystemExit(f"--variant {spec}: give a new name and at least one FIELD=VALUE, e.g. bnst:update_bn_running_stats=true")
    RECIPES[name] = replace(DEFAULT, name=name, **changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", default=None, help="[default: hymenoptera]")
    parser.add_argument("--fractions", default="0.25,0.5,1")
    parser.add_argument("--recipes", default="default,classic")
    parser.add_argument("--strategies", default="head,finetune,full")
    parser.add_argument("--lr", type=float, default=5e-3, help="head / finetune --lr")
    parser.add_argument("--full-lr", type=float, default=1e-4, help="--lr of the full strategy")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--low-res", type=int, default=None, metavar="N",
                        help="train and validate on every photo shrunk to N pixels (shorter side) and blown back up")
    parser.add_argument("--upside-down", action="store_true",
                        help="change the task: upright vs upside-down photos (a task ImageNet's classes do not teach)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda trains with AMP and channels_last, so its figures are not the CPU's to the photo")
    parser.add_argument("--workers", type=int, default=None, help="data loader processes [default: the trainer's]")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=VALUE[,FIELD=VALUE]",
                        help="a recipe to pick with --recipes: default with these fields changed (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("build/train_strategies"))
    args = parser.parse_args()
    for spec in args.variant:
        add_variant(spec)
    data = args.data or hymenoptera_dir()
    if args.low_res:
        data = low_res(data, args.low_res, args.out)
    if args.upside_down:
        data = upside_down(data, args.out)
    rows = []
    for fraction in map(float, args.fractions.split(",")):
        for seed in map(int, args.seeds.split(",")):
            folder = subset(data, fraction, seed, args.out)
            for recipe in args.recipes.split(","):
                for strategy in args.strategies.split(","):
                    run = args.out / f"{fraction:g}-{recipe}-{strategy}-s{seed}"
                    record = run / "row.json"
                    lr = args.full_lr if strategy == "full" else args.lr
                    settings = {"lr": lr, "batch_size": args.batch_size, "epochs": [args.freeze_epochs, args.epochs],
                                "low_res": args.low_res, "upside_down": args.upside_down, "device": args.device,
                                "recipe_values": {k: v for k, v in asdict(RECIPES[recipe]).items() if k != "name"}}
                    _rename_cached_fields(record)
                    row = cached_row(record, settings)
                    if row is None:
                        config = TrainConfig(strategy=strategy, recipe=recipe, lr=lr, batch_size=args.batch_size,
                                             freeze_epochs=args.freeze_epochs, epochs=args.epochs, seed=seed,
                                             device=args.device, workers=args.workers)
                        start = time.perf_counter()
                        result = fit(folder, run, config, progress=False)
                        accuracy = [h["val_accuracy"] for h in result.history]
                        row = {"fraction": fraction, "train_images": sum(1 for _ in (folder / "train").glob("*/*")),
                               "recipe": recipe, "strategy": strategy, "seed": seed, **settings,
                               "best": max(accuracy), "last": accuracy[-1], "accuracy": accuracy,
                               "wall_s": time.perf_counter() - start, "body_change": body_change(run)}
                        record.write_text(json.dumps(row, indent=1))
                        for checkpoint in run.glob("*.pt"):
                            checkpoint.unlink()
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("fraction", "recipe", "strategy", "seed", "best", "last")}),
                          flush=True)
    lines = ["| train photos | recipe | strategy | LR | seed | best % | last % | wall s | body Δw early / mid / late % |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['train_images']} ({r['fraction']:.0%}) | {r['recipe']} | {r['strategy']} | {r['lr']:g} | "
                     f"{r['seed']} | {100 * r['best']:.2f} | {100 * r['last']:.2f} | {r['wall_s']:.0f} | "
                     + " / ".join(f"{100 * c:.2f}" for c in r["body_change"]) + " |")
    if len(args.seeds.split(",")) > 1:
        lines += ["", *seed_means(rows)]
    text = "\n".join(lines)
    (args.out / "results.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
