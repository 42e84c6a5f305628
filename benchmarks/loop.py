"""``python -m benchmarks.loop``: the whole loop of docs/service.md measured on clothing, with most "shirt" photos held
back from the first model (issue #32).

1. base: edge-train on clothing/train with only ``--keep-shirts`` of its 290 shirt photos (seeded), clothing/val as val;
   edge-export, signed; the box serves it through a symlink with ``--reload --verify-key``.
2. serve: a video of ``--stream`` held-back shirt photos; capture keeps the frames below ``--capture-below``.
3. label: every capture through the review page's HTTP API, as "shirt" (the video holds shirts only: the oracle a
   person would be).
4. retrain: edge-train --init-from base/best.pt --new-frames <the page's dataset>; 5. export, signed;
6. hot reload: the symlink switched, the box's model_swap record awaited.
Accuracy before and after: on the remaining held-back shirt photos (never streamed, never labelled) and on
clothing/val. Every step's wall time, with the CPU and its load average (a shared machine inflates them).
Results: OUT/results.json and OUT/results.md.

``--threads N`` runs every step with N compute threads (``OMP_NUM_THREADS`` for torch in edge-train and edge-export,
``--threads`` for the box and the accuracy passes). On a 2-core machine shared with another job, torch's default
of one thread per core waits on the busy core at every operator: MobileNetV2 at batch 16 trained a step in 8.2 s
with 2 threads against 1.7 s with 1 (benchmarks/README.md, "The loop on clothing").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
import numpy as np
from edgeport.runtime.machine import cpu_info
from PIL import Image

from .common import REPO

BIN = Path(sys.executable).parent
CLOTHING = Path(os.environ.get("EDGEPORT_CLOTHING", REPO.parent / "shared" / "data" / "clothing"))
HELD = "shirt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(steps: dict[str, float], name: str, command: list[Any], env: dict[str, str] | None = None) -> str:
    started = time.perf_counter()
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    steps[name] = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {' '.join(map(str, command))}\n{proc.stderr[-3000:]}")
    print(f"{name}: {steps[name]} s", flush=True)
    return proc.stdout + proc.stderr


def _link_tree(src: Path, dst: Path, keep: dict[str, set[str]] | None = None) -> None:
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / folder.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.iterdir()):
            if keep is None or folder.name not in keep or photo.name in keep[folder.name]:
                (dst / folder.name / photo.name).symlink_to(photo.resolve())


def _video(path: Path, photos: list[Path]) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 320))
    for photo in photos:
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((320, 320)))
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()


def _accuracy(bundle: Path, photos: list[tuple[Path, str]], threads: int | None) -> dict[str, Any]:
    """Top-1 against the folder's label, and how many of the photos the bundle's rule calls unknown."""
    from edgeport.runtime import Classifier

    clf = Classifier(bundle, threads=threads)
    answers = [clf.predict(path, top_k=1) for path, _ in photos]
    right = sum(a.label == label for a, (_, label) in zip(answers, photos))
    return {"correct": right, "total": len(photos), "accuracy": round(right / len(photos), 4),
            "unknown": sum(a.unknown for a in answers)}


def _epochs(run: Path) -> dict[str, Any]:
    """A run's epochs (phase, val accuracy, seconds) and the one best.pt holds: whether the body's epochs were kept."""
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = [{"epoch": h["epoch"], "phase": h["phase"], "val_accuracy": round(h["val_accuracy"], 4),
               "seconds": round(h["seconds"], 1)} for h in metrics["history"]]
    return {"epochs": epochs, "best_epoch": metrics["best"]["epoch"]}


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as answer:
        return json.loads(answer.read())


def _label(port: int, source: str, name: str, label: str) -> None:
    body = json.dumps({"source": source, "name": name, "label": label}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/label", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=REPO / "build" / "benchmarks" / "loop")
@click.option("--keep-shirts", type=float, default=0.1, show_default=True, help="Share of train shirts the base model sees.")
@click.option("--stream", type=int, default=130, show_default=True, help="Held-back shirts in the served video.")
@click.option("--capture-below", type=float, default=0.6, show_default=True)
@click.option("--base-epochs", type=int, default=0, show_default=True, help="Unfrozen epochs of the base run.")
@click.option("--retrain-epochs", type=int, default=0, show_default=True, help="Unfrozen epochs of the --init-from run (0: only the head is refitted; the body stays the deployed one).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Compute threads of every step [default: each library's own].")
def main(out: Path, keep_shirts: float, stream: int, capture_below: float, base_epochs: int, retrain_epochs: int,
         seed: int, threads: int | None) -> None:
    """Run the loop end to end and write OUT/results.{json,md}."""
    if not (CLOTHING / "train" / HELD).is_dir():
        raise SystemExit(f"clothing data not found at {CLOTHING}; set EDGEPORT_CLOTHING")
    run_started = time.perf_counter()
    out = out.resolve()  # the symlinks made below must not point relative to their own folder
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    shirts = sorted((CLOTHING / "train" / HELD).iterdir())
    rng.shuffle(shirts)
    n_keep = round(len(shirts) * keep_shirts)
    kept, held = shirts[:n_keep], shirts[n_keep:]
    streamed, remaining = held[:stream], held[stream:]
    data = out / "data"
    _link_tree(CLOTHING / "train", data / "train", keep={HELD: {p.name for p in kept}})
    _link_tree(CLOTHING / "val", data / "val")
    steps: dict[str, float] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    box_threads = ["--threads", threads] if threads else []
    load_before = os.getloadavg()
    key, pub = out / "release.pem", out / "release.pub.pem"  # docs/fleet-updates.md's two openssl commands
    _timed(steps, "key: openssl ecparam", ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])
    _timed(steps, "key: openssl ec -pubout", ["openssl", "ec", "-in", key, "-pubout", "-out", pub])
    common = ["--freeze-epochs", "1", "--seed", seed]
    _timed(steps, "base: edge-train", [BIN / "edge-train", data, *common, "--epochs", base_epochs, "--out", out / "base"],
           env)
    _timed(steps, "base: edge-export --sign-key", [BIN / "edge-export", out / "base" / "best.pt", "--out",
                                                    out / "bundles" / "base", "--sign-key", key], env)
    current = out / "current"
    current.symlink_to(out / "bundles" / "base")
    _video(out / "stream.avi", streamed)
    (out / "inbox").mkdir()
    port = _free_port()
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    box_log = open(out / "box.stderr.txt", "w")  # the box's own lines, for when it stops early
    box = subprocess.Popen([str(c) for c in [
        BIN / "edge-predict", "serve", current, "--reload", "--verify-key", pub, "--video", out / "stream.avi",
        "--name", f"door={out / 'stream.avi'}", "--watch", out / "inbox", "--capture", out / "captures",
        "--capture-below", capture_below, "--capture-rate", 100000, "--ui-port", port, "--ui-dataset",
        out / "reviewed", "--output-format", "jsonl", *box_threads]], stdout=subprocess.PIPE, stderr=box_log,
        text=True, env=env)

    def read() -> None:
        for line in box.stdout:
            if line.startswith("{"):
                records.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            if box.poll() is not None:
                raise SystemExit(f"edge-predict serve exited early:\n{(out / 'box.stderr.txt').read_text()[-3000:]}")
            try:
                status = _status(port)
                if status["cameras"].get("door", {}).get("status") == "ended":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        steps["serve: the video through the box, captures kept"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        captures = [c for c in status["captures"] if c["source"] == "door"]
        for capture in captures:
            _label(port, "door", capture["name"], HELD)
        steps["label: every capture through the page's API"] = round(time.perf_counter() - started, 1)
        log = _timed(steps, "retrain: edge-train --init-from", [
            BIN / "edge-train", data, "--init-from", out / "base" / "best.pt", "--new-frames", out / "reviewed", *common,
            "--epochs", retrain_epochs, "--out", out / "retrained"], env)
        _timed(steps, "export: edge-export --sign-key", [BIN / "edge-export", out / "retrained" / "best.pt", "--out",
                                                         out / "bundles" / "retrained", "--sign-key", key], env)
        started = time.perf_counter()
        switch = out / "current.new"
        switch.symlink_to(out / "bundles" / "retrained")
        os.replace(switch, current)  # the symlink switched atomically, as a fleet update does
        nudges = iter(remaining)
        while not any(r.get("event") == "model_swap" for r in records):
            if any(r.get("event") == "model_update_rejected" for r in records) or time.perf_counter() - started > 300:
                raise SystemExit(f"no model_swap: {[r for r in records if 'event' in r][-3:]}")
            shutil.copy(next(nudges), out / "inbox")  # frames, so the loop reaches the swap point between two
            time.sleep(0.5)
        steps["hot reload: symlink switched → model_swap record"] = round(time.perf_counter() - started, 1)
    finally:
        box.send_signal(signal.SIGTERM)
        box.wait(30)
        box_log.close()
    swap = next(r for r in records if r.get("event") == "model_swap")
    served = [r for r in records if r.get("source_id") == "door" and "top_k" in r]  # frame records, not states
    load_after = os.getloadavg()
    held_eval = [(p, HELD) for p in remaining]
    val = [(p, p.parent.name) for p in sorted((CLOTHING / "val").glob("*/*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    result = {
        "command": "python -m benchmarks.loop " + " ".join(sys.argv[1:]),
        "shirts": {"train": len(shirts), "kept_for_base": len(kept), "streamed": len(streamed), "remaining": len(remaining)},
        "captures": len(captures), "labels_used": len(captures), "frames_served": len(served),
        "served_called_shirt": sum(r.get("label") == HELD for r in served),
        "swap_checks": swap["checks"],
        "before": {"remaining_held_back_shirts": _accuracy(out / "bundles" / "base", held_eval, threads),
                   "clothing_val": _accuracy(out / "bundles" / "base", val, threads)},
        "after": {"remaining_held_back_shirts": _accuracy(out / "bundles" / "retrained", held_eval, threads),
                  "clothing_val": _accuracy(out / "bundles" / "retrained", val, threads)},
        "init_from_lines": [line for line in log.splitlines() if line.startswith("--init-from")],
        "base_run": _epochs(out / "base"), "retrain_run": _epochs(out / "retrained"),
        "steps_s": steps,
        "total_s": round(time.perf_counter() - run_started, 1),
        "machine": {"cpu": cpu_info(), "cpus": os.cpu_count(), "threads": threads,
                    "load_average_1_5_15_min": {"start": [round(x, 2) for x in load_before],
                                                "end": [round(x, 2) for x in load_after]}},
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [f"`{result['command']}`", "", "| | before | after |", "|---|---|---|"]
    for part in ("remaining_held_back_shirts", "clothing_val"):
        b, a = result["before"][part], result["after"][part]
        lines.append(f"| {part} | {b['accuracy']:.4f} ({b['correct']}/{b['total']}) | {a['accuracy']:.4f} "
                     f"({a['correct']}/{a['total']}) |")
    cpu, load = result["machine"]["cpu"], result["machine"]["load_average_1_5_15_min"]
    lines += ["", f"labels used: {result['labels_used']} of {len(served)} frames served ({result['served_called_shirt']} "
                  f"called {HELD} by the base model)", "", "| step | s |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in steps.items()]
    lines += [f"| total (with data links, video, accuracy passes) | {result['total_s']} |", "",
              f"{cpu['model']}, {result['machine']['cpus']} CPUs, flags {' '.join(cpu['flags'])}; threads "
              f"{threads or 'default'}; load average (1/5/15 min) {load['start']} at start, {load['end']} at end"]
    for run in ("base_run", "retrain_run"):
        lines += ["", f"{run}: " + ", ".join(f"epoch {e['epoch']} ({e['phase']}) val {e['val_accuracy']:.4f} in "
                                             f"{e['seconds']} s" for e in result[run]["epochs"])
                  + f"; best.pt holds epoch {result[run]['best_epoch']}"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(result["init_from_lines"], indent=1))


if __name__ == "__main__":
    main()
