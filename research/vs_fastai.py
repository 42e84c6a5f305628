"""fastai vs edge-train: one fine-tuning recipe each, same split, architecture, weights, epochs
and LR × batch grid; one table of best and last-epoch val accuracy and training seconds, mean ± SD over seeds.

    python -m research.vs_fastai [--lrs 1e-3,2e-3,5e-3,1e-2 --batches 16,32 --seeds 0,1,2 --sides fastai,edgeport]
        [--freeze-epochs 1 --epochs 2] [--edge-args "--recipe classic"] [--out build/vs_fastai] [--table-only]

fastai runs research/fastai_run.py (vision_learner + fine_tune) under its own venv, build/fastai-venv, made on first
use: fastai 2.8 and its non-torch requirements, with this interpreter's torch and torchvision reached through a .pth
file so both sides train on the same torch. edgeport runs the edge-train CLI. Both: MobileNetV2 IMAGENET1K_V1, CPU,
no loader workers, one process per run. Each run writes OUT/runs/NAME.json and a re-run skips those, so an
interrupted grid resumes; runs go seed by seed, the sides alternating, so partial results cover every cell.
The table's seconds are training only (fastai's fine_tune call, edge-train's epochs); whole-process wall under it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from .common import REPO, cached_row, hymenoptera_dir

SIDES = ("fastai", "edgeport")
FASTAI = "fastai>=2.8,<2.9"
SKIP_REQUIREMENTS = {"torch", "torchvision", "spacy"}  # torch is reused; spacy is for fastai.text only
HEADER = ("| LR / batch | fastai best | fastai last | edgeport best | edgeport last | edgeport − fastai (best) "
          "| fastai s | edgeport s |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def fastai_python(venv: Path) -> Path:
    """The venv's Python, set up once: fastai without its torch requirement, so it cannot pull a second torch."""
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return python
    print(f"setting up {venv} ({FASTAI}, reusing torch {importlib.metadata.version('torch')})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True)
    torch_sites = {str(Path(importlib.util.find_spec(name).origin).parents[1]) for name in ("torch", "torchvision")}
    Path(site.strip(), "edgeport-torch.pth").write_text("".join(f"{path}\n" for path in sorted(torch_sites)))
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", FASTAI], check=True)
    requires = subprocess.check_output(
        [python, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('fastai')))"], text=True)
    subprocess.run([*pip, *[r for r in requires.splitlines() if "extra ==" not in r
                            and re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0].lower() not in SKIP_REQUIREMENTS]], check=True)
    versions = subprocess.check_output([python, "-c", "import fastai, torch; print(fastai.__version__, torch.__version__)"],
                                       text=True).split()
    if versions[1].split("+")[0] != importlib.metadata.version("torch"):
        raise SystemExit(f"{venv} imports torch {versions[1]}, not this interpreter's; remove it and retry")
    (venv / ".ready").write_text(f"fastai {versions[0]}, torch {versions[1]}\n")
    return python


def local(path: Path) -> str:
    """``path`` relative to the working directory when under it: the recorded commands name no machine's layout."""
    inside = os.path.abspath(path).startswith(os.getcwd() + os.sep)
    return os.path.relpath(path) if inside else str(path)


def run_one(side: str, lr: str, batch: int, seed: int, args: argparse.Namespace, settings: dict) -> dict[str, Any]:
    """One training process; its val accuracy per epoch, training seconds and whole-process wall seconds. ``lr``
    "find": each side's own finder (fastai's ``lr_find`` valley; edge-train ``--lr auto``)."""
    folder = args.out / "runs" / f"{side}-lr{lr}-b{batch}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # what an interrupted try left
    folder.mkdir(parents=True)
    own_lr = lr if lr != "find" else ("find" if side == "fastai" else "auto")
    common = [str(args.data), "--lr", own_lr, "--batch-size", str(batch), "--seed", str(seed),
              "--freeze-epochs", str(args.freeze_epochs), "--epochs", str(args.epochs)]
    if side == "fastai":
        cmd = [local(args.fastai_python), local(REPO / "research" / "fastai_run.py"), *common,
               "--json", str(folder / "fastai.json"), *shlex.split(args.fastai_args)]
    else:
        edge_train = Path(sys.executable).with_name("edge-train")
        cmd = [local(edge_train) if edge_train.exists() else "edge-train", *common, "--out", str(folder),
               "--device", "cpu", "--workers", "0", *shlex.split(args.edge_args)]
    load, start = os.getloadavg()[0], time.perf_counter()
    with open(folder / "log.txt", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"{folder.name} failed (exit {code}): {shlex.join(cmd)}; see {folder / 'log.txt'}")
    if side == "fastai":
        extra = json.loads((folder / "fastai.json").read_text())
        accuracy, fit = extra.pop("accuracy"), extra.pop("fit_seconds")
        extra["lr_used"] = extra.pop("lr", None)
    else:
        history = json.loads((folder / "metrics.json").read_text())["history"]
        accuracy, fit = [row["val_accuracy"] for row in history], sum(row["seconds"] for row in history)
        extra_lr = json.loads((folder / "metrics.json").read_text())["config"]["lr"]
        report = json.loads((folder / "data_report.json").read_text())
        extra = {"train_images": sum(report["train_counts"].values()), "val_images": sum(report["val_counts"].values()),
                 "skipped": report["skipped"], "lr_used": extra_lr}
        for checkpoint in folder.glob("*.pt"):  # ~9 MB each and the table needs none
            checkpoint.unlink()
    return {"side": side, "lr": lr, "batch": batch, "seed": seed, "accuracy": accuracy, "best": max(accuracy),
            "last": accuracy[-1], "fit_seconds": fit, "process_seconds": wall, "settings": settings,
            "command": shlex.join(cmd), "load_at_start": load, "cpus": os.cpu_count(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


def spread(values: list[float]) -> dict[str, Any]:
    return {"mean": fmean(values), "sd": stdev(values) if len(values) > 1 else None, "n": len(values)}


def _value(record: dict[str, Any], key: str) -> float:
    """Accuracies to 1e-6: fastai reports float32 ratios, edge-train float64 ones, so the same 147/153 photos would
    otherwise differ by 2e-10 and a tie count as a loss (one photo here is 6.5e-3)."""
    return round(record[key], 6) if key in ("best", "last") else record[key]


def _lr(record: dict[str, Any]) -> str:
    """A run's LR as its cell names it: "0.001", or "find" (older records hold floats)."""
    return record["lr"] if isinstance(record["lr"], str) else f"{record['lr']:g}"


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (LR, batch) cell: per side, mean and sample SD over its seeds of best, last and seconds."""
    cells: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in records:
        cells.setdefault((_lr(r), r["batch"]), {}).setdefault(r["side"], []).append(r)
    order = sorted(cells, key=lambda cell: (cell[0] == "find", float(cell[0]) if cell[0] != "find" else 0.0, cell[1]))
    return [{"lr": lr, "batch": batch, **{side: {key: spread([_value(r, key) for r in runs])
                                                 for key in ("best", "last", "fit_seconds", "process_seconds")}
                                          for side, runs in cells[lr, batch].items()}} for lr, batch in order]


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table, its mean row over cells and the lines that say how to read it."""
    def fmt(stat: dict | None, scale: float, digits: int) -> str:
        if stat is None:
            return "–"
        text = f"{stat['mean'] * scale:.{digits}f}"
        return text if stat.get("sd") is None else f"{text} ± {stat['sd'] * scale:.{digits}f}"

    def line(label: str, f: dict, e: dict) -> str:
        diff = f"{100 * (e['best']['mean'] - f['best']['mean']):+.1f}" if f and e else "–"
        return (f"| {label} | {fmt(f and f['best'], 100, 1)} | {fmt(f and f['last'], 100, 1)} | "
                f"{fmt(e and e['best'], 100, 1)} | {fmt(e and e['last'], 100, 1)} | {diff} | "
                f"{fmt(f and f['fit_seconds'], 1, 0)} | {fmt(e and e['fit_seconds'], 1, 0)} |")

    lines = [HEADER] + [line(f"{r['lr']} / {r['batch']}", r.get("fastai"), r.get("edgeport")) for r in rows]
    both = [r for r in rows if "fastai" in r and "edgeport" in r]
    pool = both or rows  # a partial grid: compare the sides on the same cells
    means = {side: {key: {"mean": fmean(r[side][key]["mean"] for r in pool if side in r)}
                    for key in ("best", "last", "fit_seconds", "process_seconds")} for side in SIDES
             if any(side in r for r in pool)}
    lines.append(line("mean", means.get("fastai"), means.get("edgeport")))
    seeds = sorted({stats["best"]["n"] for r in rows for side, stats in r.items() if side in SIDES})
    lines += ["", f"Accuracy in %, val set, best epoch and last epoch; mean ± sample standard deviation over the seeds "
                  f"(n = {'/'.join(map(str, seeds))} per cell); the mean row averages the cell means{' of the cells both sides have' if both else ''}. Seconds: training "
                  f"only (fastai's fine_tune call; edge-train's epochs, validation included)."]
    if both:
        diffs = [r["edgeport"]["best"]["mean"] - r["fastai"]["best"]["mean"] for r in both]
        lines.append(f"edgeport's mean best ≥ fastai's in {sum(d >= 0 for d in diffs)} of {len(both)} cells; "
                     f"mean difference {100 * fmean(diffs):+.1f} points.")
    walls = [f"{side} {means[side]['process_seconds']['mean']:.0f} s" for side in means]
    lines.append(f"Whole-process wall time (start, imports, data, model, training, reports), mean row: {', '.join(walls)}.")
    return "\n".join(lines)


def write_results(records: list[dict[str, Any]], out: Path) -> None:
    rows = summarize(records)
    first = {side: next((r for r in records if r["side"] == side), None) for side in SIDES}
    env = {"fastai": first["fastai"] and first["fastai"]["fastai"], "torch": importlib.metadata.version("torch"),
           "cpus": os.cpu_count(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "runs": len(records), "tabulated by": shlex.join(["python", "-m", "research.vs_fastai", *sys.argv[1:]]),
           **{f"{side}_command": r["command"] for side, r in first.items() if r}}
    text = table(rows)
    environment = "\n".join(f"- {key}: `{value}`" for key, value in env.items())
    (out / "results.md").write_text(f"# fastai vs edge-train\n\n{text}\n\n{environment}\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"environment": env, "cells": rows, "runs": records}, indent=1))
    print(f"\n{text}\n\n{environment}\n\nwritten: {out / 'results.md'}, {out / 'results.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="train/ and val/ class folders [default: hymenoptera]")
    parser.add_argument("--lrs", default="1e-3,2e-3,5e-3,1e-2",
                        help="comma-separated; 'find': each side's own LR finder (fastai lr_find, edge-train --lr auto)")
    parser.add_argument("--batches", default="16,32")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sides", default="fastai,edgeport")
    parser.add_argument("--edge-args", default="", help="more edge-train options, e.g. '--recipe classic'")
    parser.add_argument("--fastai-args", default="", help="more fastai_run.py options, e.g. '--normalize'")
    parser.add_argument("--fastai-python", type=Path, default=None, help="a Python with fastai [default: build/fastai-venv]")
    parser.add_argument("--out", type=Path, default=Path("build/vs_fastai"))
    parser.add_argument("--table-only", action="store_true", help="tabulate the run JSONs under --out, train nothing")
    args = parser.parse_args()
    args.data = args.data or hymenoptera_dir()
    runs_dir = args.out / "runs"
    if not args.table_only:
        sides = [side for side in SIDES if side in args.sides.split(",")]
        if "fastai" in sides and args.fastai_python is None:
            args.fastai_python = fastai_python(REPO / "build" / "fastai-venv")
        grid = [(side, lr if lr == "find" else f"{float(lr):g}", int(b), int(s)) for s in args.seeds.split(",") for lr in args.lrs.split(",")
                for b in args.batches.split(",") for side in sides]
        for done, (side, lr, batch, seed) in enumerate(grid, 1):
            path = runs_dir / f"{side}-lr{lr}-b{batch}-s{seed}.json"
            settings = {"data": str(args.data), "freeze_epochs": args.freeze_epochs, "epochs": args.epochs,
                        "extra_args": args.fastai_args if side == "fastai" else args.edge_args}
            if cached_row(path, settings, within="settings") is not None:
                continue
            r = run_one(side, lr, batch, seed, args, settings)
            path.write_text(json.dumps(r, indent=1))
            print(f"[{done}/{len(grid)}] {path.stem}: best {r['best']:.2%}, last {r['last']:.2%}, "
                  f"{r['fit_seconds']:.0f} s training, {r['process_seconds']:.0f} s wall", flush=True)
    records = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    if not records:
        raise SystemExit(f"no run JSONs under {runs_dir}")
    write_results(records, args.out)


if __name__ == "__main__":
    main()
