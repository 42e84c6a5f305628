"""The runtime versions devices really have: a bundle's formats in venvs with the oldest onnxruntime and
OpenVINO that pyproject.toml declares, against the newest, on the same photos.

    python -m tools.runtime_matrix BUNDLE PHOTOS_DIR [--max-images N]

Each environment is a fresh venv under ``build/runtime-matrix/`` (kept for the next run) with the runtime
pinned to the declared floor (``onnxruntime>=X.Y`` → ``onnxruntime~=X.Y.0``, likewise OpenVINO; ``numpy<2``
where the old wheels need it) or left at the newest release, and edgeport installed with ``--no-deps``.
``edge-predict`` classifies every photo with every format of the bundle; the table gives, per environment
and format, the top-1 agreement with the newest environment and the largest probability difference.
Exit 1 when any format disagrees on a top-1 or cannot load: then raise the floor in pyproject.toml to
what passes, honestly, or make the oldest pass.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVS_DIR = REPO / "build" / "runtime-matrix"


def declared_floors() -> dict[str, str]:
    """``{"onnxruntime": "1.17", "openvino": "2024.0"}`` from pyproject.toml's requirements."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    return {name: re.search(rf'"{name}>=([\d.]+)"', text).group(1) for name in ("onnxruntime", "openvino")}


def environments() -> dict[str, list[str]]:
    floors = declared_floors()
    return {
        "oldest": [f"onnxruntime~={floors['onnxruntime']}.0", f"openvino~={floors['openvino']}.0", "numpy<2"],
        "newest": ["onnxruntime", "openvino", "numpy"],
    }


def ensure_env(name: str, requirements: list[str]) -> Path:
    """A venv with ``requirements`` + the runtime's other dependencies + edgeport (no deps); reused when
    it already holds them (its ``requirements.txt`` records what it was made with)."""
    folder = ENVS_DIR / name
    python = folder / "bin" / "python"
    wanted = "\n".join([*requirements, "pillow", "click", "tqdm"]) + "\n"
    stamp = folder / "requirements.txt"
    if not (python.is_file() and stamp.is_file() and stamp.read_text() == wanted):
        venv.create(folder, clear=True, with_pip=True)
        stamp.write_text(wanted)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(stamp)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(REPO)], check=True,
                   capture_output=True)
    return python


def versions(python: Path) -> str:
    code = "import onnxruntime, openvino, numpy; print(onnxruntime.__version__, openvino.__version__.split('-')[0], numpy.__version__)"
    ort, ov, np_version = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return f"onnxruntime {ort}, OpenVINO {ov}, numpy {np_version}"


def predict(python: Path, bundle: Path, fmt: str, photos: list[Path]) -> dict[str, tuple[str, float]] | str:
    """file → (top-1 label, its probability), or the error when the format does not load."""
    code = "import sys; sys.argv[0] = 'edge-predict'; from edgeport.runtime.cli import main; main()"
    out = subprocess.run([str(python), "-c", code, str(bundle), *map(str, photos), "--model-format", fmt,
                          "--output-format", "jsonl", "--top-k", "1"], capture_output=True, text=True, timeout=1800)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or len(records) != len(photos):
        return (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:200]
    return {r["source"]: (r["top_k"][0]["label"], r["top_k"][0]["score"]) for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.rglob("*.jpg"))[: args.max_images]
    formats = list(json.loads((args.bundle / "manifest.json").read_text())["formats"])
    results: dict[str, dict[str, dict | str]] = {}
    described = {}
    for name, requirements in environments().items():
        python = ensure_env(name, requirements)
        described[name] = versions(python)
        results[name] = {fmt: predict(python, args.bundle, fmt, photos) for fmt in formats}
    failed = False
    print("| environment | runtimes | format | images | top-1 agreement with newest | max Δ top-1 probability |")
    print("|---|---|---|---|---|---|")
    for name in results:
        for fmt in formats:
            got, ref = results[name][fmt], results["newest"][fmt]
            if isinstance(got, str) or isinstance(ref, str):
                failed = True
                print(f"| {name} | {described[name]} | {fmt} | – | does not run: {got if isinstance(got, str) else ref} | – |")
                continue
            same = [got[f][0] == ref[f][0] for f in ref]
            delta = max(abs(got[f][1] - ref[f][1]) for f in ref)
            failed |= not all(same)
            print(f"| {name} | {described[name]} | {fmt} | {len(same)} | {sum(same) / len(same):.2%} | {delta:.2e} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
