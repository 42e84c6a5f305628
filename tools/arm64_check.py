"""The device install proven on linux/aarch64: ``make arm64-check``, in an emulated Debian 12 arm64 root.

    python -m tools.arm64_check [--data DIR] [--checkpoint best.pt] [--every N] [--study]

On the host (x86-64): a fine-tuned ants/bees checkpoint (``build/release/run/best.pt`` when ``make
release-model`` made one, else a one-epoch head-only fine-tune), its bundle (onnx, onnx-int8 built with
``--target-cpu arm64``, openvino, openvino-int8), a short MJPG clip of val photos, and the x86 reference
records of ``edge-predict``. Inside the root (``tools.arm64_root``): the base install + ``[camera]``
from aarch64 wheels with no network, then ``edge-predict`` on the same photos:

a. FP32 onnx: the top-1 equals x86 on every photo; max |Δ probability| over all classes;
b. onnx-int8 (arm64 scheme): top-1 agreement with x86 FP32 ≥ 97% and accuracy on the labels;
c. the bundle's ``--self-test``, where this edge-predict has one;
d. ``--video`` on the clip: every frame classified, the top-1 equal to x86 on every frame.

The photos are every ``--every``-th val photo (sorted paths; 3 → 51 of 153): emulation costs ~3 s a
photo. ``--study`` adds the INT8 weight schemes and OpenVINO's ARM CPU plugin inside the root (the
rows "3. …"): what an ARM device should be shipped. One markdown table on stdout; exit 1 when a check
fails. Latencies under qemu are those of an emulator, never evidence of ARM speed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import arm64_root as arm
from .arm64_root import MNT, REPO, VENV

AGREEMENT_GATE = 97.0
WORK = REPO / "build" / "arm64-check"
DEVICES_DOC = REPO / "docs" / "devices.md"
#: Linux arm64 AT_HWCAP / AT_HWCAP2 bit names, in bit order (arch/arm64/include/uapi/asm/hwcap.h).
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
               "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
                "i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 "
                "sme_b16f32 sme_f32f32 sme_fa64 wfxt").split()
#: The features that pick onnxruntime's ARM64 INT8/FP32 kernels (MLAS): NEON, SDOT/UDOT, I8MM (SMMLA), SVE.
KERNEL_FEATURES = ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16", "sme")
SUMMARY = re.compile(r"(\d+) classified, (\d+) failed, latency mean [\d.]+ / p50 ([\d.]+)")
AUXV_CODE = ("import struct; a = dict(struct.iter_unpack('<QQ', open('/proc/self/auxv', 'rb').read())); "
             "print(a.get(16, 0), a.get(26, 0))")


def hwcap_features(hwcap: int, hwcap2: int) -> list[str]:
    """The kernel's /proc/cpuinfo feature names of an AT_HWCAP / AT_HWCAP2 pair."""
    return ([name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1]
            + [name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1])


def unit_command(doc: Path, bundle: str, clip: str) -> list[str]:
    """The ``ExecStart=`` of the systemd unit in docs/devices.md (split as systemd splits it), its bundle path
    replaced by ``bundle`` and ``--camera N`` by ``--video clip``: an emulator has no camera."""
    lines = [line for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("ExecStart=")]
    if len(lines) != 1:
        raise SystemExit(f"{doc} must hold exactly one ExecStart= line, found {len(lines)}")
    argv = shlex.split(lines[0].removeprefix("ExecStart="))
    if "--camera" not in argv:
        raise SystemExit(f"{doc}: the unit's ExecStart has no --camera to replace")
    at = argv.index("--camera")
    argv[at: at + 2] = ["--video", clip]
    return [bundle if arg == f"{VENV}/bundle" else arg for arg in argv]


@dataclass(frozen=True)
class Run:
    """One edge-predict run: key (photo path under the data dir, or frame number) → probabilities by label."""

    probs: dict[str, dict[str, float]]
    failed: int
    p50_ms: float | None
    error: str | None = None

    def top1(self, key: str) -> str:
        scores = self.probs[key]
        return max(scores, key=scores.get)


def parse_run(stdout: str, stderr: str, returncode: int, prefix: str) -> Run:
    """An edge-predict ``--output-format jsonl`` run; ``prefix`` is stripped from sources to key photos alike on
    both machines (video frames are keyed by their number)."""
    probs, failed = {}, 0
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if not record["ok"]:
            failed += 1
            continue
        key = str(record["frame"]) if "frame" in record else record["source"].removeprefix(prefix)
        probs[key] = {entry["label"]: entry["score"] for entry in record["top_k"]}
    summary = SUMMARY.search(stderr)
    error = None if returncode == 0 else (stderr.strip().splitlines() or [f"exit {returncode}"])[-1][:200]
    return Run(probs, failed, float(summary.group(3)) if summary else None, error)


@dataclass(frozen=True)
class Comparison:
    n: int
    same_top1: int
    max_delta: float
    missing: int

    @property
    def agreement(self) -> float:
        return 100.0 * self.same_top1 / self.n if self.n else 0.0


def compare(reference: Run, got: Run) -> Comparison:
    """Top-1 agreement and the largest |Δ probability| over every class of every photo both runs have;
    ``missing``: reference photos ``got`` has no record for (they count as disagreements)."""
    keys = [k for k in reference.probs if k in got.probs]
    same = sum(reference.top1(k) == got.top1(k) for k in keys)
    delta = max((abs(p - got.probs[k].get(label, 0.0)) for k in keys for label, p in reference.probs[k].items()), default=0.0)
    return Comparison(len(reference.probs), same, delta, len(reference.probs) - len(keys))


def accuracy(run: Run) -> float:
    """Top-1 accuracy where the photo's folder names its label (val/ants/x.jpg → ants)."""
    keys = list(run.probs)
    return 100.0 * sum(run.top1(k) == Path(k).parent.name for k in keys) / len(keys) if keys else 0.0


def latency(run: Run) -> str:
    return f"p50 {run.p50_ms:.0f} ms (emulated: not ARM speed)" if run.p50_ms is not None else "–"


def render_table(rows: list[tuple[str, str, str, str, bool | None]]) -> str:
    """``| check | photos | result | detail | pass |``; pass None prints "–" (measured, not gated)."""
    lines = ["| check | photos/frames | result | detail | pass |", "|---|---|---|---|---|"]
    for check, n, result, detail, ok in rows:
        lines.append(f"| {check} | {n} | {result} | {detail} | {'–' if ok is None else ('yes' if ok else 'NO')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- host side


def host_versions() -> dict[str, str]:
    """The x86 reference's runtime versions: the aarch64 wheels are pinned to them, so a difference is the CPU's."""
    from importlib import metadata

    names = ("numpy", "onnxruntime", "pillow", "click", "tqdm", "opencv-python-headless", "openvino")
    return {name: metadata.version(name) for name in names}


def host_tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def ensure_checkpoint(data: Path, checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        return checkpoint
    release = REPO / "build" / "release" / "run" / "best.pt"
    if release.is_file():
        return release
    run = WORK / "run"
    if not (run / "best.pt").is_file():
        arm._run([host_tool("edge-train"), str(data), "--out", str(run), "--freeze-epochs", "1", "--epochs", "0", "--seed", "0"])
    return run / "best.pt"


def _code_digest() -> str:
    """sha256 over the exporter's and runtime's sources: a cached bundle from older code (one without the
    conformance kit, say) is rebuilt rather than checked."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*(REPO / "export").rglob("*.py"), *(REPO / "runtime").rglob("*.py")]):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_bundle(checkpoint: Path, data: Path) -> Path:
    """The bundle, rebuilt when the checkpoint or the export/runtime code changed (both stamped beside it)."""
    from edgeport.runtime.manifest import sha256_file

    bundle, stamp = WORK / "bundle", WORK / "bundle.source"
    wanted = f"{sha256_file(checkpoint)} {_code_digest()}"
    if not (stamp.is_file() and stamp.read_text() == wanted and (bundle / "manifest.json").is_file()):
        arm._run([host_tool("edge-export"), str(checkpoint), "--out", str(bundle), "--formats",
                  "onnx,onnx-int8,openvino,openvino-int8", "--calib", str(data / "train"), "--target-cpu", "arm64"])
        stamp.write_text(wanted)
    return bundle


def write_clip(photos: list[Path], path: Path) -> int:
    """A 320×240 MJPG clip, one photo per frame (as .ci/run's base-install check writes it)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for photo in photos:
        writer.write(cv2.resize(cv2.imread(str(photo)), (320, 240)))
    writer.release()
    return len(photos)


def predict_args(model: str, inputs: list[str], fmt: str | None, k: int) -> list[str]:
    return [model, *inputs, *(["--model-format", fmt] if fmt else []), "--output-format", "jsonl", "--top-k", str(k)]


def host_predict(model: Path, inputs: list[str], fmt: str | None, k: int, prefix: str) -> Run:
    done = subprocess.run([host_tool("edge-predict"), *predict_args(str(model), inputs, fmt, k)], capture_output=True,
                          text=True, cwd=REPO)
    return parse_run(done.stdout, done.stderr, done.returncode, prefix)


def root_predict(model: str, inputs: list[str], fmt: str | None, k: int, prefix: str, extra: list[str] = ()) -> Run:
    started = time.monotonic()
    done = arm.in_root(arm.ROOT, [f"{VENV}/bin/edge-predict", *predict_args(model, inputs, fmt, k), *extra])
    print(f"  (arm64) edge-predict {Path(model).name} {fmt or ''}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return parse_run(done.stdout, done.stderr, done.returncode, prefix)


# ---------------------------------------------------------------------------------------------- the check


def study_models(bundle: Path, data: Path) -> dict[str, Path]:
    """For ``--study``: the same FP32 model quantized with each weight scheme (calibration and bias
    correction as edge-export does them), built once on the host."""
    from edgeport.export.formats.calibration import select_calibration_images
    from edgeport.export.formats.int8_scheme import Int8Scheme, choose_scheme
    from edgeport.export.formats.onnx_int8 import quantize_onnx
    from edgeport.runtime import Classifier

    schemes = {
        "S8S8, 8-bit weights": (Int8Scheme("arm64", "int8", "int8", False, "signed activations and weights"), True),
        "U8S8, 7-bit GEMM + 8-bit depthwise weights (edgeport on AVX2)": (choose_scheme("avx2"), True),
    }
    contract = Classifier(bundle).contract
    calib = select_calibration_images(data / "train", 100)
    models = {"U8S8, 8-bit weights (edgeport on arm64: the bundle's onnx-int8)": bundle / "model.int8.onnx"}
    for number, (label, (scheme, depthwise_8bit)) in enumerate(schemes.items()):
        path = WORK / "schemes" / f"scheme{number}.onnx"
        if not path.is_file() or path.stat().st_mtime < (bundle / "model.onnx").stat().st_mtime:
            path.parent.mkdir(parents=True, exist_ok=True)
            quantize_onnx(bundle / "model.onnx", path, contract, calib, scheme, depthwise_8bit=depthwise_8bit)
        models[label] = path
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hymenoptera",
                        help="hymenoptera folder with train/ and val/ (default: ../shared/data/hymenoptera beside the repo)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a best.pt to check (default: see the module doc)")
    parser.add_argument("--every", type=int, default=3, help="every Nth val photo (1: all 153)")
    parser.add_argument("--study", action="store_true", help="also compare INT8 schemes and OpenVINO inside the root")
    args = parser.parse_args()
    data = args.data.resolve()
    if not (data / "val").is_dir() or not (data / "train").is_dir():
        raise SystemExit(f"{data} has no train/ and val/ folders; pass --data")
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)

    arm.ensure_host()
    built = arm.ensure_root()
    versions = host_versions()
    pins = [f"{name}=={version}" for name, version in versions.items() if name != "openvino"]
    arm.fetch_wheels([*pins, "setuptools>=77", "wheel", *([f"openvino=={versions['openvino']}"] if args.study else [])])
    checkpoint = ensure_checkpoint(data, args.checkpoint)
    bundle = ensure_bundle(checkpoint, data)
    labels = (bundle / "labels.txt").read_text().split()
    photos = sorted((data / "val").rglob("*.jpg"))[:: args.every]
    clip = WORK / "clip.avi"
    frames = write_clip(photos[::4], clip)
    models = study_models(bundle, data) if args.study else {}
    setup_s = time.monotonic() - started

    k = len(labels)
    rel = [str(p.relative_to(data)) for p in photos]
    host_prefix = f"{data}/"
    ref = host_predict(bundle, [str(p) for p in photos], "onnx", k, host_prefix)
    ref_video = host_predict(bundle, ["--video", str(clip)], "onnx", k, "")
    host_int8 = host_predict(bundle, [str(p) for p in photos], "onnx-int8", k, host_prefix)

    binds = {f"{MNT}/data": data, f"{MNT}/wheels": arm.WHEELS, f"{MNT}/work": WORK}
    rows: list[tuple[str, str, str, str, bool | None]] = []
    with arm.mounted(arm.ROOT, binds):
        arm.install_project(arm.ROOT)
        install_s = time.monotonic() - started - setup_s
        hw, hw2 = map(int, arm.in_root(arm.ROOT, ["python3", "-c", AUXV_CODE]).stdout.split())
        features = hwcap_features(hw, hw2)
        root_bundle, root_photos = f"{MNT}/work/bundle", [f"{MNT}/data/{r}" for r in rel]
        prefix = f"{MNT}/data/"
        with arm.host_cpu_hidden(arm.ROOT):
            ort = arm.in_root(arm.ROOT, [f"{VENV}/bin/python", "-c", "import onnxruntime as o; print(o.__version__)"])
            fp32 = root_predict(root_bundle, root_photos, "onnx", k, prefix)
            int8 = root_predict(root_bundle, root_photos, "onnx-int8", k, prefix)
            video = root_predict(root_bundle, ["--video", f"{MNT}/work/clip.avi"], "onnx", k, "")
            has_self_test = "--self-test" in arm.in_root(arm.ROOT, [f"{VENV}/bin/edge-predict", "--help"]).stdout
            # The onnxruntime formats only: under qemu-user onnxruntime needs the host's CPU folder hidden and OpenVINO
            # crashes without it (see arm64_root.host_cpu_hidden), so one process cannot replay both kinds here.
            self_test = None
            if has_self_test:
                for fmt in ("onnx", "onnx-int8"):
                    self_test = arm.in_root(arm.ROOT, [f"{VENV}/bin/edge-predict", root_bundle, "--self-test", "--model-format", fmt])
                    if self_test.returncode != 0:
                        break
            unit = arm.in_root(arm.ROOT, unit_command(DEVICES_DOC, root_bundle, f"{MNT}/work/clip.avi"))

        rows.append(("arm64 CPU (emulated, qemu-user)", "–",
                     " ".join(f for f in KERNEL_FEATURES if f in features) or "none",
                     f"AT_HWCAP features the kernels can use; onnxruntime {ort.stdout.strip()}: "
                     + ("pytorch/cpuinfo not initialised, features from getauxval" if "cpuinfo_initialize failed" in ort.stderr
                        else "pytorch/cpuinfo initialised"), None))
        c = compare(ref, fp32)
        rows.append(("a. FP32 onnx vs x86 FP32", str(len(rel)), f"top-1 equal {c.same_top1}/{c.n}",
                     f"max abs Δ probability {c.max_delta:.1e} (jsonl rounds to 1e-6); {latency(fp32)}",
                     fp32.error is None and c.same_top1 == c.n and fp32.failed == 0))
        c8, cx = compare(ref, int8), compare(host_int8, int8)
        rows.append(("b. onnx-int8 (--target-cpu arm64) vs x86 FP32", str(len(rel)), f"agreement {c8.agreement:.2f}%",
                     f"accuracy {accuracy(int8):.2f}% (x86 FP32 {accuracy(ref):.2f}%); top-1 equal to x86 INT8 "
                     f"{cx.same_top1}/{cx.n}, max abs Δ probability {cx.max_delta:.1e}; {latency(int8)}",
                     int8.error is None and c8.agreement >= AGREEMENT_GATE and int8.failed == 0))
        if self_test is None:
            rows.append(("c. bundle self-test", "–", "not run", "edge-predict has no --self-test on this branch", None))
        else:
            rows.append(("c. bundle self-test (onnx, onnx-int8)", "–", f"exit {self_test.returncode}",
                         (self_test.stdout + self_test.stderr).strip().splitlines()[-1][:120] if (self_test.stdout + self_test.stderr).strip()
                         else "", self_test.returncode == 0))
        cv = compare(ref_video, video)
        rows.append(("d. --video MJPG clip vs x86", str(frames), f"{len(video.probs)} frames, top-1 equal {cv.same_top1}/{cv.n}",
                     f"max abs Δ probability {cv.max_delta:.1e}; {latency(video)}",
                     video.error is None and len(video.probs) == frames and cv.same_top1 == cv.n == frames))
        served = parse_run(unit.stdout, unit.stderr, unit.returncode, "")
        rows.append(("e. docs/devices.md systemd ExecStart (--camera → the clip)", str(frames),
                     f"exit {unit.returncode}, {len(served.probs)} frames", "the unit's own options, onnx-int8",
                     unit.returncode == 0 and len(served.probs) == frames and served.failed == 0))
        check_s = time.monotonic() - started
        if args.study:
            rows += study(models, bundle, photos, rel, ref, k, host_prefix, root_photos, prefix, versions["openvino"],
                          {bundle / "model.int8.onnx": (int8, host_int8)})
    total_s = time.monotonic() - started
    print(f"\narm64 check: {len(rel)} of {len(list((data / 'val').rglob('*.jpg')))} val photos (1 in {args.every}), "
          f"x86 reference on the host with the same library versions ({', '.join(pins[:3])}); root "
          f"{'built' if built else 'reused'}; host setup {setup_s:.0f} s, install in the root {install_s:.0f} s, checks a–e "
          f"done after {check_s:.0f} s, total {total_s:.0f} s\n")
    print(render_table(rows))
    sys.exit(0 if all(ok is not False for *_, ok in rows) else 1)


def study(models: dict[str, Path], bundle: Path, photos: list[Path], rel: list[str], ref: Run, k: int, host_prefix: str,
          root_photos: list[str], prefix: str, openvino: str, done: dict[Path, tuple[Run, Run]]) -> list[tuple[str, str, str, str, bool | None]]:
    """The ``--study`` rows: each INT8 scheme, then OpenVINO's ARM CPU plugin on the IR (FP32 and INT8). ``done``: model →
    (arm64 run, x86 run) already made by the check."""
    rows = []
    for label, path in models.items():
        if path in done:
            got, x86 = done[path]
        else:
            with arm.host_cpu_hidden(arm.ROOT):
                got = root_predict(f"{MNT}/work/{path.relative_to(WORK)}", root_photos, None, k, prefix)
            x86 = host_predict(path, [str(p) for p in photos], None, k, host_prefix)
        on_x86 = compare(ref, x86)
        c = compare(ref, got)
        rows.append((f"3. INT8 {label}", str(len(rel)), f"agreement {c.agreement:.2f}%",
                     f"accuracy {accuracy(got):.2f}%; on x86 agreement {on_x86.agreement:.2f}%; {latency(got)}", None))
    install = arm.in_root(arm.ROOT, [f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links", f"{MNT}/wheels",
                                     f"openvino=={openvino}"])
    for fmt in ("openvino", "openvino-int8"):
        got = root_predict(f"{MNT}/work/bundle", root_photos, fmt, k, prefix) if install.returncode == 0 else None
        if got is None or got.error:
            rows.append((f"3. OpenVINO {openvino} ARM CPU plugin, {fmt}", str(len(rel)), "does not run",
                         (got.error if got else install.stderr.strip()[-200:]), None))
            continue
        c = compare(ref, got)
        rows.append((f"3. OpenVINO {openvino} ARM CPU plugin, {fmt}", str(len(rel)), f"agreement {c.agreement:.2f}%",
                     f"accuracy {accuracy(got):.2f}%, max abs Δ probability vs x86 onnx FP32 {c.max_delta:.1e}; {latency(got)}", None))
    return rows


if __name__ == "__main__":
    main()
