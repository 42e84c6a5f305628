"""An emulated Debian 12 (bookworm) arm64 root to run the device install in: the base of Raspberry Pi OS
64-bit (Python 3.11). Host tools, the cached root, its mounts, the aarch64 wheels and commands inside it.

Everything here needs root on a Debian/Ubuntu x86-64 host and installs what it lacks itself
(``mmdebstrap``, ``qemu-user-static``, ``binfmt-support``), so it also runs on a fresh CI machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "build" / "arm64-root"
WHEELS = REPO / "build" / "arm64-wheels"
SUITE = "bookworm"
#: Debian's python3 is the interpreter of the device (3.11 on bookworm / Raspberry Pi OS 12).
PYTHON_VERSION = "3.11"
INCLUDE = ("python3", "python3-venv")
MMDEBSTRAP = ["mmdebstrap", "--mode=root", "--arch=arm64", "--variant=apt", f"--include={','.join(INCLUDE)}", SUITE]
HOST_PACKAGES = {"mmdebstrap": "mmdebstrap", "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: Inside the root: the venv of the device install, and where the host's folders appear.
VENV = "/opt/edgeport"
MNT = "/mnt/edgeport"


def platform_tags(glibc_minor: int = 36) -> list[str]:
    """The wheel platforms pip on a glibc 2.``glibc_minor`` aarch64 device accepts (bookworm: 2.36), newest
    first: ``pip download --platform`` takes them literally, and OpenVINO's wheel is manylinux_2_35."""
    return [f"manylinux_2_{minor}_aarch64" for minor in range(glibc_minor, 16, -1)] + ["manylinux2014_aarch64"]


def _run(command: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, command)), file=sys.stderr, flush=True)
    return subprocess.run(list(map(str, command)), check=True, **kwargs)


def ensure_host() -> None:
    """mmdebstrap, qemu-user-static and binfmt-support installed, binfmt_misc mounted, aarch64 registered."""
    if os.geteuid() != 0:
        raise SystemExit("arm64-check needs root (mmdebstrap --mode=root, mount, chroot); run it as root")
    missing = sorted({package for tool, package in HOST_PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        _run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        _run(["apt-get", "install", "-y", "-q", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
             stdout=subprocess.DEVNULL)
    if not (BINFMT / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    if not (BINFMT / "qemu-aarch64").exists():
        _run(["update-binfmts", "--enable", "qemu-aarch64"])


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them in)."""
    prefix = str(path.resolve())
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True)


def _remove_root(path: Path) -> None:
    """Delete a root folder, never through a live mount (a bound /proc or /sys)."""
    for point in mounts_under(path):
        _run(["umount", point])
    if mounts_under(path):
        raise SystemExit(f"{path} still has mounts; unmount them before deleting it")
    shutil.rmtree(path, ignore_errors=False)


def ensure_root(root: Path = ROOT) -> bool:
    """The arm64 root, built once with mmdebstrap and reused while its stamp matches. True when built now."""
    stamp = root / ".edgeport-root"
    wanted = " ".join(MMDEBSTRAP) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return False
    staging = root.with_name(root.name + ".partial")
    for path in (staging, root):
        if path.exists():
            _remove_root(path)
    _run([*MMDEBSTRAP, str(staging)])
    (staging / ".edgeport-root").write_text(wanted)
    staging.rename(root)
    return True


def fetch_wheels(requirements: Sequence[str], dest: Path = WHEELS) -> None:
    """The aarch64 wheels of ``requirements`` (and their dependencies), downloaded on the host: the root has
    no network. pip skips files already in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in platform_tags() for arg in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), "--find-links", str(dest), *platforms,
          "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp", *requirements])


@contextlib.contextmanager
def mounted(root: Path, binds: dict[str, Path]) -> Iterator[None]:
    """/proc and /sys inside the root, and each host folder of ``binds`` read-only at its path in the root;
    all unmounted on the way out, also on failure."""
    done: list[str] = []
    try:
        for fstype, target in (("proc", "proc"), ("sysfs", "sys")):
            _run(["mount", "-t", fstype, fstype, str(root / target)])
            done.append(str(root / target))
        for inside, host in binds.items():
            point = root / inside.lstrip("/")
            point.mkdir(parents=True, exist_ok=True)
            _run(["mount", "--bind", str(host), str(point)])
            done.append(str(point))
            _run(["mount", "-o", "remount,bind,ro", str(point)])
        yield
    finally:
        for point in reversed(done):
            subprocess.run(["umount", point], check=False)


@contextlib.contextmanager
def host_cpu_hidden(root: Path) -> Iterator[None]:
    """An empty read-only tmpfs over the root's /sys/devices/system/cpu while onnxruntime runs.

    qemu-user shows the guest the host's own CPU description: /proc/cpuinfo and /sys/devices/system/cpu
    describe the x86 host. onnxruntime's bundled pytorch/cpuinfo crashes on that mix (SIGSEGV on import,
    onnxruntime 1.32, qemu 7.2). Hidden, cpuinfo fails to initialise (onnxruntime says so on stderr) and
    onnxruntime takes the CPU features from getauxval(AT_HWCAP): the emulated CPU's. OpenVINO needs the
    opposite (hwloc without the folder: SIGSEGV), so it runs outside this context."""
    point = root / "sys" / "devices" / "system" / "cpu"
    _run(["mount", "-t", "tmpfs", "-o", "ro,size=4k", "tmpfs", str(point)])
    try:
        yield
    finally:
        subprocess.run(["umount", str(point)], check=False)


def in_root(root: Path, command: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """``command`` inside the root (chroot, through binfmt's qemu-aarch64), its output captured."""
    env = {"PATH": f"{VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return subprocess.run(["chroot", str(root), *map(str, command)], capture_output=True, text=True, env=env, timeout=timeout)


def install_project(root: Path, extras: str = "camera") -> None:
    """The device install inside the root, as docs/devices.md writes it: a venv from Debian's python3, then
    ``pip install "edgeport[camera]"`` — here from this checkout and the host's wheels (--no-index)."""
    src = root / "opt" / "edgeport-src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("runtime", "trainer", "export"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    steps = [] if (root / VENV.lstrip("/") / "bin" / "python").exists() else [["python3", "-m", "venv", VENV]]
    steps.append([f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links", f"{MNT}/wheels",
                  f"/opt/edgeport-src[{extras}]"])
    for step in steps:
        print("+ (arm64)", " ".join(step), file=sys.stderr, flush=True)
        done = in_root(root, step)
        if done.returncode != 0:
            raise SystemExit(f"inside the arm64 root, {' '.join(step)} failed:\n{done.stdout}{done.stderr}")
