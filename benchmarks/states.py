"""Stable states (issue #31): the window vote against the EMA, on videos made from real photos.

    nice -n 10 python -m benchmarks.states BUNDLE [--seeds 10] [--rates 0.1 0.2 0.3] [--burst 1] [--threads 2]

BUNDLE is the hymenoptera fine-tune (``make release-model`` writes one). Each video (MJPG .avi written with OpenCV,
320×240) shows one ant photo for 40 frames, then one bee photo for 40 frames, with seeded sensor noise; at a rate
of ``--rates`` of the frames, a disturbance replaces the frame: a single frame of the other class (another val
photo), a blanked frame (black), or a corrupted frame (its JPEG bytes in the file overwritten, so FFmpeg decodes
garbage); ``--burst 2`` makes each disturbance two frames in a row. Every frame is classified once, through
``classify_stream`` as edge-predict does; then each smoother, window and hold runs over the same results. A run is right when it gives exactly one state change (the initial
state aside), ants → bees, at or after frame 40; its delay is the frame that completed the hold minus 40.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

TRUE_CHANGE = 40  # frames of class A before class B
FRAMES = 80
SIZE = (320, 240)
KINDS = ("other", "blank", "corrupt")


@dataclass(frozen=True)
class StateVideo:
    path: Path
    disturbed: dict[int, str]  # frame index → kind of disturbance


def _frame(photo: Path) -> np.ndarray:
    with Image.open(photo) as image:
        rgb = ImageOps.fit(image.convert("RGB"), SIZE)
    return np.asarray(rgb)[:, :, ::-1].copy()  # BGR, as OpenCV writes


def make_state_video(path: Path, scene_a: Path, scene_b: Path, others_a: list[Path], others_b: list[Path], *,
                     seed: int, rate: float = 0.15, burst: int = 1) -> StateVideo:
    """The test video: ``scene_a`` for ``TRUE_CHANGE`` frames then ``scene_b``, with disturbances on single frames
    (never two in a row) at ``rate``, a third of each kind: a photo of the other class (from ``others_*``), black, or
    corrupted bytes. ``burst`` > 1: each disturbance lasts that many frames in a row (still ``rate`` of the frames)."""
    import cv2

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    candidates = list(range(FRAMES - burst + 1))
    rng.shuffle(candidates)
    disturbed: dict[int, str] = {}
    for start in candidates:
        if len(disturbed) >= round(rate * FRAMES):
            break
        if all(i not in disturbed for i in range(start - 1, start + burst + 1)):  # bursts never touch
            kind = KINDS[len(disturbed) // burst % len(KINDS)]  # each kind as often, at random places
            disturbed.update({i: kind for i in range(start, start + burst)})
    scenes = (_frame(scene_a), _frame(scene_b))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for index in range(FRAMES):
        first_half = index < TRUE_CHANGE
        kind = disturbed.get(index)
        if kind == "other":
            frame = _frame(rng.choice(others_b if first_half else others_a))
        elif kind == "blank":
            frame = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        else:
            scene = scenes[0] if first_half else scenes[1]
            frame = np.clip(scene.astype(np.int16) + noise.normal(0, 4, scene.shape).astype(np.int16), 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()
    _corrupt(path, [i for i, kind in disturbed.items() if kind == "corrupt"], rng)
    return StateVideo(path, disturbed)


def _corrupt(path: Path, frames: list[int], rng: random.Random) -> None:
    """Overwrite the middle of these frames' JPEG data in the .avi (MJPG: one JPEG per frame, in order)."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i + 2] == 0xFF]
    if len(starts) != FRAMES:
        raise RuntimeError(f"{path}: found {len(starts)} JPEG frames, expected {FRAMES}")
    for index in frames:
        start = starts[index]
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        middle = start + (end - start) // 3
        # No 0xFF: a marker byte would make FFmpeg drop the packet, and OpenCV ends the video there; without one the
        # frame decodes to garbage, as a camera's corrupted frame does.
        data[middle:middle + 400] = bytes(rng.randrange(255) for _ in range(400))
    path.write_bytes(bytes(data))


def val_photos(root: Path) -> tuple[list[Path], list[Path]]:
    """The ants and the bees of the val split, sorted."""
    return sorted((root / "val" / "ants").glob("*.jpg")), sorted((root / "val" / "bees").glob("*.jpg"))


def sure_scenes(clf, photos: list[Path], label: str, at_least: float = 0.8) -> list[Path]:
    """The photos the model classifies ``label`` with ``at_least`` on the video's own framing: a scene the model gets
    wrong undisturbed would measure the model, not the smoothing (the disturbing photos are drawn from all)."""
    return [p for p in photos if (top := clf.predict(_frame(p), color="bgr", top_k=1)).label == label
            and top.score >= at_least]


def pick_scenes(ants: list[Path], bees: list[Path], sure_ants: list[Path], sure_bees: list[Path], seed: int):
    """One run's two scenes (seeded) and the photos its disturbances come from."""
    pick = random.Random(1000 + seed)
    scene_a, scene_b = pick.choice(sure_ants), pick.choice(sure_bees)
    return scene_a, scene_b, [p for p in ants if p != scene_a], [p for p in bees if p != scene_b]


def score_run(changes: list, true_change: int = TRUE_CHANGE) -> dict:
    """What one run's state records say: changes after the first state, and the delay of the right one."""
    later = [c for c in changes if c.previous is not None]
    right = len(later) == 1 and changes[0].label == "ants" and later[0].previous == "ants" and later[0].label == "bees" and later[0].confirmed_frame >= true_change
    return {"changes": len(later), "right": right, "initial": changes[0].label if changes else None,
            "delay": later[0].confirmed_frame - true_change if right else None,
            "since_error": later[0].since_frame - true_change if right else None}


def main() -> None:
    from edgeport.runtime import Classifier
    from edgeport.runtime.frames import video_frames
    from edgeport.runtime.stream import Smoothing, StateTracker, classify_stream

    from .common import hymenoptera_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--burst", type=int, default=1, help="frames in a row each disturbance lasts")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 3, 5, 7])
    parser.add_argument("--holds", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("build/benchmarks/states"))
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    ants, bees = val_photos(hymenoptera_dir())
    clf = Classifier(args.bundle, threads=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sure = sure_scenes(clf, ants, "ants"), sure_scenes(clf, bees, "bees")
    print(f"scenes the model is sure of: {len(sure[0])} of {len(ants)} ants, {len(sure[1])} of {len(bees)} bees", flush=True)
    runs = []  # (rate, seed, results)
    for rate in args.rates:
        for seed in range(args.seeds):
            video = make_state_video(args.out / f"r{rate}_s{seed}.avi", *pick_scenes(ants, bees, *sure, seed),
                                     seed=seed, rate=rate, burst=args.burst)
            results = list(classify_stream(clf, video_frames(video.path), top_k=2))
            if len(results) != FRAMES or not all(r.ok for r in results):
                raise SystemExit(f"{video.path}: {len(results)} frames, {sum(not r.ok for r in results)} errors")
            fooled = sum(r.label != ("ants" if i < TRUE_CHANGE else "bees") for i, r in enumerate(results))
            runs.append((rate, seed, results))
            print(f"rate {rate:.0%} seed {seed}: {len(video.disturbed)} disturbed frames, {fooled} frames labelled "
                  "otherwise than the scene", flush=True)
    rows = []
    for method in ("vote", "ema"):
        for window in args.windows:
            for hold in args.holds:
                if method == "ema" and window == 1:
                    continue  # alpha 1: no smoothing, the same as vote with window 1
                smoothing = Smoothing(method, window, hold)
                for rate in args.rates:
                    scored = []
                    for run_rate, seed, results in runs:
                        if run_rate != rate:
                            continue
                        tracker = StateTracker(smoothing)
                        changes = [c for r in results if (c := tracker.see(r, r.source, None)) is not None]
                        scored.append(score_run(changes))
                    delays = [s["delay"] for s in scored if s["right"]]
                    rows.append({"method": method, "window": window, "hold": hold, "rate": rate, "runs": len(scored),
                                 "right": sum(s["right"] for s in scored),
                                 "spurious": sum(s["changes"] - s["right"] for s in scored),
                                 "missed": sum(s["changes"] == 0 for s in scored),
                                 "mean_delay": round(float(np.mean(delays)), 1) if delays else None,
                                 "max_delay": max(delays) if delays else None})
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    rates = " | ".join(f"right at {rate:.0%}" for rate in args.rates)
    print(f"\n| smoothing | window | hold | {rates} | spurious changes | missed | delay mean | delay max |")
    print("|---|---|---|" + "---|" * len(args.rates) + "---|---|---|---|")
    for key in dict.fromkeys((r["method"], r["window"], r["hold"]) for r in rows):
        group = [r for r in rows if (r["method"], r["window"], r["hold"]) == key]
        delays = [(r["mean_delay"], r["right"]) for r in group if r["mean_delay"] is not None]
        mean = sum(d * n for d, n in delays) / max(1, sum(n for _, n in delays))
        worst = max((r["max_delay"] for r in group if r["max_delay"] is not None), default=None)
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(f"{r['right']}/{r['runs']}" for r in group)
              + f" | {sum(r['spurious'] for r in group)} | {sum(r['missed'] for r in group)} | {mean:.1f} | {worst} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
