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

A format's entry also records its contract's temperature and "unknown" rule (``calibration``, absent in kits written
before them): the served model must carry the same, and its unknown scores on the kit's images must be finite.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .classifier import Classifier
from .contract import PreprocessContract
from .errors import ConformanceError, IntegrityError
from .manifest import MANIFEST_NAME, bundle_root_of
from .preprocess import preprocess, preprocess_fast

__all__ = ["KIT_DIR", "KIT_NAME", "KIT_SCHEMA_VERSION", "Kit", "FormatResult", "SelfTestReport", "read_kit",
           "MAX_LOGIT_TOLERANCE_SHARE", "MAX_PREPROCESS_TOLERANCE",
           "self_test", "self_test_classifier", "self_test_bundle", "near_tie_flips", "calibration_of"]

KIT_DIR = "conformance"
KIT_NAME = "kit.json"
#: Bumped when a kit file changes meaning or moves; readers refuse newer kits.
KIT_SCHEMA_VERSION = 1


#: The most a kit may allow: a logit tolerance above this share of the largest expected logit, or a preprocessing
#: tolerance above this many units of the normalised input, would let a changed model or decoder pass unnoticed.
MAX_LOGIT_TOLERANCE_SHARE = 0.5
MAX_PREPROCESS_TOLERANCE = 0.25


@dataclass(frozen=True)
class Kit:
    root: Path  # the bundle
    data: dict[str, Any]
    inputs: np.ndarray  # (N, 3, H, W) float32
    images: list[bytes]  # the reference photos' bytes (hashed against the manifest when it was given)
    manifest: dict[str, Any] | None = None

    def expected(self, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The logits ``fmt`` gave at export and its entry (tolerance, top-k), the tolerance bounded."""
        entry = self.data["formats"].get(fmt)
        if entry is None:
            raise ConformanceError(f"{self.root / KIT_DIR / KIT_NAME} has no expected outputs for format {fmt!r}; "
                                   f"it has {sorted(self.data['formats'])}")
        logits = _load_npy(self.root, entry["logits"], (len(self.inputs), None), self.manifest)
        tolerance = entry.get("tolerance", {}).get("max_abs_logit_diff") if isinstance(entry.get("tolerance"), dict) else None
        bound = MAX_LOGIT_TOLERANCE_SHARE * float(np.abs(logits).max())
        if not _number(tolerance) or not 0 < tolerance <= bound:
            raise ConformanceError(f"{self.root / KIT_DIR / KIT_NAME}: {fmt}'s logit tolerance {tolerance!r} is not in "
                                   f"(0, {bound:.3g}] ({MAX_LOGIT_TOLERANCE_SHARE:.0%} of its largest logit); a kit that "
                                   "allows that much checks nothing: re-export the bundle")
        return logits, entry


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _inside(root: Path, rel: object) -> str:
    """``KIT_DIR/rel`` as a bundle member name that stays inside the bundle (no absolute paths, no ``..``)."""
    if not isinstance(rel, str) or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise ConformanceError(f"{root / KIT_DIR / KIT_NAME}: path {rel!r} leaves the kit; re-export the bundle")
    return f"{KIT_DIR}/{rel}"


def _read(root: Path, name: str, manifest: dict[str, Any] | None) -> bytes:
    """A kit file's bytes; with the bundle's manifest, they must be listed there and match its sha256 (the bytes
    checked are the bytes used, so a kit edited after export, tolerances included, is refused)."""
    path = root / name
    if manifest is not None:
        entry = manifest.get("files", {}).get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise IntegrityError(f"{path} is not listed in {MANIFEST_NAME}: the conformance kit was changed after export; "
                                 "restore the bundle from your release or re-run edge-export")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConformanceError(f"{path} is missing; re-export the bundle") from exc
    except OSError as exc:
        raise ConformanceError(f"{path} is unreadable ({exc.strerror}); re-export the bundle") from exc
    if manifest is not None and hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]:
        raise IntegrityError(f"{path} does not match its sha256 in {MANIFEST_NAME}: the conformance kit was changed after "
                             "export; restore the bundle from your release or re-run edge-export")
    return data


def _load_npy(root: Path, rel: object, shape: tuple[int | None, ...], manifest: dict[str, Any] | None) -> np.ndarray:
    name = _inside(root, rel)
    try:
        array = np.load(io.BytesIO(_read(root, name, manifest)), allow_pickle=False)
    except ValueError as exc:
        raise ConformanceError(f"{root / name} is unreadable ({exc}); re-export the bundle") from exc
    if array.dtype != np.float32 or array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        raise ConformanceError(f"{root / name}: expected float32 of shape {shape}, found {array.dtype} {array.shape}; "
                               "re-export the bundle")
    return array


def read_kit(bundle: str | os.PathLike, manifest: dict[str, Any] | None = None) -> Kit:
    """The kit of ``bundle``, its version and file shapes checked; with the bundle's (verified) ``manifest``, every
    kit file must be listed and hashed there, as the model files are."""
    root = Path(bundle)
    path = root / KIT_DIR / KIT_NAME
    if not path.exists() and manifest is not None and f"{KIT_DIR}/{KIT_NAME}" not in manifest.get("files", {}):
        raise ConformanceError(f"{root} has no conformance kit ({KIT_DIR}/{KIT_NAME}); re-export it with this edgeport "
                               "to get a self-test")
    try:
        data = json.loads(_read(root, f"{KIT_DIR}/{KIT_NAME}", manifest).decode("utf-8"))
    except ConformanceError as exc:
        if not path.exists():
            raise ConformanceError(f"{root} has no conformance kit ({KIT_DIR}/{KIT_NAME}); re-export it with this "
                                   "edgeport to get a self-test") from exc
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConformanceError(f"{path} is unreadable ({exc}); re-export the bundle") from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= KIT_SCHEMA_VERSION:
        raise ConformanceError(f"{path}: kit schema_version {version!r} is not one this runtime reads (1…{KIT_SCHEMA_VERSION}); "
                               "upgrade edgeport on this device")
    if not isinstance(data.get("images"), list) or not data["images"] or not isinstance(data.get("formats"), dict):
        raise ConformanceError(f"{path} lacks 'images'/'formats'; re-export the bundle")
    pre_tol = data.get("preprocess", {}).get("tolerance") if isinstance(data.get("preprocess"), dict) else None
    if not _number(pre_tol) or not 0 < pre_tol <= MAX_PREPROCESS_TOLERANCE:
        raise ConformanceError(f"{path}: preprocessing tolerance {pre_tol!r} is not in (0, {MAX_PREPROCESS_TOLERANCE}]; "
                               "re-export the bundle")
    items = [item if isinstance(item, dict) else {} for item in data["images"]]
    inputs = np.stack([_load_npy(root, item.get("input"), (3, None, None), manifest) for item in items])
    images = [_read(root, _inside(root, item.get("image")), manifest) for item in items]
    return Kit(root, data, inputs, images, manifest)


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


def calibration_of(contract: PreprocessContract) -> dict[str, Any]:
    """What the kit records of a format's calibration: its temperature and its "unknown" rule (null when none)."""
    return {"temperature": contract.temperature, "ood": asdict(contract.ood) if contract.ood is not None else None}


def _calibration_failures(clf: Classifier, kit: Kit, entry: dict[str, Any]) -> list[str]:
    expected = entry.get("calibration")
    if expected is None:  # a kit from before calibrated bundles
        return []
    failures = []
    served = calibration_of(clf.contract)
    if served != expected:
        failures.append(f"the model's temperature and unknown rule {served} differ from the kit's {expected}: the "
                        "bundle's files come from different exports; re-run edge-export")
    if clf.unknown is not None:
        scores = clf.outputs_from_tensor(kit.inputs)[1]
        if scores is None or not np.isfinite(scores).all():
            failures.append(f"the unknown score ({clf.unknown.score}) is not finite on the kit's images; re-run edge-export")
    return failures


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
    failures += _calibration_failures(clf, kit, entry)
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
    return self_test_classifier(clf, read_kit(root, clf.manifest), fmt)


def self_test_bundle(bundle: str | os.PathLike, formats: list[str] | None = None, threads: int | None = None,
                     verify_key: str | os.PathLike | None | bool = None) -> SelfTestReport:
    """Every format of ``bundle`` (or ``formats``) that has expected outputs in the kit, on this machine."""
    root = Path(bundle)
    # The signature (when a key is set) is checked once, by the first load; its verified manifest vouches for the kit.
    first = Classifier(root, format=formats[0] if formats else None, threads=threads, verify_key=verify_key)
    kit = read_kit(root, first.manifest)
    names = formats or list(kit.data["formats"])
    results = []
    for name in names:
        clf = first if name == first.format else Classifier(root, format=name, threads=threads, verify_key=False)
        results.append(self_test_classifier(clf, kit, name))
    return SelfTestReport(str(root), results)
