"""The conformance kit: a self-test that travels with the model (``BUNDLE/conformance/``).

At export the kit stores a few reference photos, their exact input tensors and every format's logits.
On a device, ``edge-predict self-test BUNDLE`` / ``self_test(clf)`` replays them on this
machine's runtime and CPU: the stored tensors through the model (max |Δlogit|, top-1 agreement,
against each format's own tolerance) and the stored photos through this runtime's preprocessing
(max |Δ| against the stored tensors). Layout (``KIT_SCHEMA_VERSION`` 1, docs/fleet-updates.md)::

    conformance/kit.json              what follows, the tolerances and how they were derived
    conformance/images/NN.jpg         reference photos, re-encoded JPEG ≤ 30 KB
    conformance/inputs/NN.npy         float32 (3, H, W): the contract's exact preprocessing of images/NN.jpg
    conformance/expected/FORMAT.npy   float32 (N, classes): the logits FORMAT gave at export, one row per image
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .classifier import Classifier
from .errors import ConformanceError
from .manifest import bundle_root_of
from .preprocess import preprocess, preprocess_fast

__all__ = ["KIT_DIR", "KIT_NAME", "KIT_SCHEMA_VERSION", "Kit", "FormatResult", "SelfTestReport", "read_kit",
           "self_test", "self_test_classifier", "self_test_bundle", "near_tie_flips"]

KIT_DIR = "conformance"
KIT_NAME = "kit.json"
#: Bumped when a kit file changes meaning or moves; readers refuse newer kits.
KIT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Kit:
    root: Path  # the bundle
    data: dict[str, Any]
    inputs: np.ndarray  # (N, 3, H, W) float32
    images: list[Path]

    def expected(self, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The logits ``fmt`` gave at export and its entry (tolerance, top-k)."""
        entry = self.data["formats"].get(fmt)
        if entry is None:
            raise ConformanceError(f"{self.root / KIT_DIR / KIT_NAME} has no expected outputs for format {fmt!r}; "
                                   f"it has {sorted(self.data['formats'])}")
        return _load_npy(self.root, entry["logits"], (len(self.inputs), None)), entry


def _inside(root: Path, rel: object) -> Path:
    """``KIT_DIR/rel`` as a path that stays inside the bundle (no absolute paths, no ``..``)."""
    if not isinstance(rel, str) or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise ConformanceError(f"{root / KIT_DIR / KIT_NAME}: path {rel!r} leaves the kit; re-export the bundle")
    return root / KIT_DIR / rel


def _load_npy(root: Path, rel: object, shape: tuple[int | None, ...]) -> np.ndarray:
    path = _inside(root, rel)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConformanceError(f"{path} is missing or unreadable ({exc}); re-export the bundle") from exc
    if array.dtype != np.float32 or array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        raise ConformanceError(f"{path}: expected float32 of shape {shape}, found {array.dtype} {array.shape}; re-export the bundle")
    return array


def read_kit(bundle: str | os.PathLike) -> Kit:
    """The kit of ``bundle``, its version and file shapes checked."""
    root = Path(bundle)
    path = root / KIT_DIR / KIT_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConformanceError(f"{root} has no conformance kit ({KIT_DIR}/{KIT_NAME}); re-export it with this edgeport "
                               "to get a self-test") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ConformanceError(f"{path} is unreadable ({exc}); re-export the bundle") from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= KIT_SCHEMA_VERSION:
        raise ConformanceError(f"{path}: kit schema_version {version!r} is not one this runtime reads (1…{KIT_SCHEMA_VERSION}); "
                               "upgrade edgeport on this device")
    if not isinstance(data.get("images"), list) or not data["images"] or not isinstance(data.get("formats"), dict):
        raise ConformanceError(f"{path} lacks 'images'/'formats'; re-export the bundle")
    inputs = np.stack([_load_npy(root, item.get("input"), (3, None, None)) for item in data["images"]])
    images = [_inside(root, item.get("image")) for item in data["images"]]
    return Kit(root, data, inputs, images)


def near_tie_flips(expected: np.ndarray, actual: np.ndarray, tolerance: float) -> tuple[float, list[int]]:
    """Top-1 agreement, and the rows whose top-1 changed although the expected winner led by more than
    twice the tolerance (a flip between two classes closer than that is a tie, not a conformance bug)."""
    top_e, top_a = expected.argmax(1), actual.argmax(1)
    ordered = np.sort(expected, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    bad = np.flatnonzero((top_e != top_a) & (margin > 2 * tolerance))
    return float((top_e == top_a).mean()), [int(i) for i in bad]


@dataclass
class FormatResult:
    """One format's self-test on this machine."""

    format: str
    backend: str
    images: int
    max_abs_logit_diff: float
    logit_tolerance: float
    top1_agreement: float
    preprocess_max_abs_diff: float
    preprocess_tolerance: float
    fast_preprocess_max_abs_diff: float  # the default fast JPEG path: reported, not gated (it resamples differently)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class SelfTestReport:
    bundle: str
    results: list[FormatResult]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "kit_schema_version": KIT_SCHEMA_VERSION, "passed": self.passed,
                "formats": [r.to_dict() for r in self.results]}

    def text(self) -> str:
        lines = []
        for r in self.results:
            lines.append(f"{r.format:<14} {'PASS' if r.passed else 'FAIL'}  max |Δlogit| {r.max_abs_logit_diff:.3g} "
                         f"(≤ {r.logit_tolerance:.3g}), top-1 agreement {r.top1_agreement:.0%} on {r.images} images, "
                         f"preprocessing max |Δ| {r.preprocess_max_abs_diff:.3g} (≤ {r.preprocess_tolerance:.3g}; "
                         f"fast path {r.fast_preprocess_max_abs_diff:.3g}) on {r.backend}")
            lines += [f"  - {failure}" for failure in r.failures]
        return "\n".join(lines)


def self_test_classifier(clf: Classifier, kit: Kit, fmt: str) -> FormatResult:
    """Replay ``kit`` on ``clf`` (a loaded format of the kit's bundle)."""
    expected, entry = kit.expected(fmt)
    tolerance = float(entry["tolerance"]["max_abs_logit_diff"])
    actual = clf.logits_from_tensor(kit.inputs)
    failures = []
    if actual.shape != expected.shape:
        raise ConformanceError(f"{fmt}: the model gives {actual.shape} logits, the kit expects {expected.shape}; re-export")
    diff = float(np.abs(actual - expected).max())
    agreement, flips = near_tie_flips(expected, actual, tolerance)
    if diff > tolerance:
        failures.append(f"max |Δlogit| {diff:.3g} exceeds the tolerance {tolerance:.3g}")
    if flips:
        failures.append(f"top-1 changed on {', '.join(kit.data['images'][i]['image'] for i in flips)}")
    pre_tol = float(kit.data["preprocess"]["tolerance"])
    exact = np.stack([preprocess(p, clf.contract) for p in kit.images])
    fast = np.stack([preprocess_fast(p, clf.contract) for p in kit.images])
    pre_diff = float(np.abs(exact - kit.inputs).max())
    if pre_diff > pre_tol:
        failures.append(f"preprocessing max |Δ| {pre_diff:.3g} exceeds {pre_tol:.3g}: this device's image decoding or "
                        "resizing differs from the export's (check the Pillow/libjpeg versions)")
    return FormatResult(fmt, clf.backend, len(kit.inputs), diff, tolerance, agreement, pre_diff, pre_tol,
                        float(np.abs(fast - kit.inputs).max()), failures)


def self_test(clf: Classifier) -> FormatResult:
    """Replay the bundle's conformance kit on ``clf``'s loaded format, on this machine (docs/fleet-updates.md):
    max |Δlogit| and top-1 agreement against the export's logits, preprocessing max |Δ|."""
    root = bundle_root_of(clf.model_path) if clf.manifest is not None else None
    if root is None:
        raise ConformanceError(f"{clf.model_path} is not in a bundle: a self-test needs the bundle's conformance kit")
    fmt = clf.format or next((n for n, e in clf.manifest["formats"].items()
                              if (root / e["file"]).resolve() == clf.model_path.resolve()), None)
    if fmt is None:
        raise ConformanceError(f"{clf.model_path} is not a format of {root}; pass the bundle directory")
    return self_test_classifier(clf, read_kit(root), fmt)


def self_test_bundle(bundle: str | os.PathLike, formats: list[str] | None = None, threads: int | None = None,
                     verify_key: str | os.PathLike | None | bool = None) -> SelfTestReport:
    """Every format of ``bundle`` (or ``formats``) that has expected outputs in the kit, on this machine."""
    root = Path(bundle)
    kit = read_kit(root)
    names = formats or list(kit.data["formats"])
    results = []
    for i, name in enumerate(names):
        # The signature (when a key is set) is checked once, with the first format.
        clf = Classifier(root, format=name, threads=threads, verify_key=verify_key if i == 0 else False)
        results.append(self_test_classifier(clf, kit, name))
    return SelfTestReport(str(root), results)
