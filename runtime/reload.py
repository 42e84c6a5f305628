"""Hot reload with rollback: a new bundle at the served path replaces the model between two frames, only
once it passed every check, and the old model keeps serving when any check fails.

Fleet updates put a new bundle at the path with an atomic rename (``mv new bundle``, or edge-export's
own rename) or a symlink switch (``ln -s v2 tmp && mv -T tmp current``). A background thread polls the
path; when what it points at changes, it loads the new bundle from its real folder (so a later switch
cannot mix two bundles) and checks it while the old model serves: sha256 of every file against the
manifest, the signature when a verify key is set, and the conformance self-test. The serving thread
swaps at its next frame boundary and writes one ``model_swap`` record; a failed check writes one
``model_update_rejected`` record naming the check, and the path is only tried again once it changes again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .classifier import Classifier
from .conformance import self_test
from .errors import ConformanceError, IntegrityError, MissingDependencyError, ModelLoadError, SignatureError, UsageError
from .manifest import MANIFEST_NAME, bundle_root_of
from .signing import SIGNATURE_NAME

__all__ = ["BundleState", "bundle_state", "check_name", "load_checked", "swap_record", "rejected_record",
           "HotReloader", "reload_now"]

Event = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BundleState:
    """What a bundle path points at now: its real folder and enough of its metadata to see a change."""

    path: Path
    real: Path
    stamp: tuple


def _stat(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def bundle_state(path: str | os.PathLike) -> BundleState | None:
    """The bundle at ``path`` now, or None while there is none (between the two renames of an update)."""
    path = Path(path)
    try:
        real = path.resolve(strict=True)
    except OSError:
        return None
    manifest = _stat(real / MANIFEST_NAME)
    if manifest is None:
        return None
    return BundleState(path, real, (str(real), _stat(real), manifest, _stat(real / SIGNATURE_NAME)))


def check_name(exc: BaseException) -> str:
    """Which check a candidate bundle failed, for the rejection record."""
    for kind, name in ((SignatureError, "signature"), (IntegrityError, "sha256"), (ConformanceError, "self_test"),
                       (MissingDependencyError, "dependency")):
        if isinstance(exc, kind):
            return name
    return "load"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def load_checked(current: Classifier, state: BundleState) -> tuple[Classifier, dict[str, Any]]:
    """A new classifier for ``state`` with ``current``'s options, every check passed; raises on the first failure."""
    candidate = Classifier(state.real, **current.options.as_kwargs())
    result = self_test(candidate)
    if not result.passed:
        raise ConformanceError(f"{state.real}: self-test failed on {result.format}: {'; '.join(result.failures)}")
    return candidate, {"format": result.format, "max_abs_logit_diff": result.max_abs_logit_diff,
                       "logit_tolerance": result.logit_tolerance, "top1_agreement": result.top1_agreement,
                       "preprocess_max_abs_diff": result.preprocess_max_abs_diff}


def swap_record(path: Path, old: dict[str, Any], new: dict[str, Any], self_test: dict[str, Any], signed: bool) -> dict[str, Any]:
    checks = ["sha256", *(["signature"] if signed else []), "self_test"]
    return {"event": "model_swap", "time": _now(), "path": str(path), "old": old, "new": new, "checks": checks,
            "self_test": self_test}


def rejected_record(path: Path, candidate: Path | None, exc: BaseException, serving: dict[str, Any]) -> dict[str, Any]:
    return {"event": "model_update_rejected", "time": _now(), "path": str(path),
            "candidate": str(candidate) if candidate else None, "check": check_name(exc), "error": str(exc),
            "serving": serving}


def reload_now(clf: Classifier) -> dict[str, Any]:
    """Load the bundle now at ``clf``'s path, check it (sha256, signature when a key is set, self-test) and swap
    ``clf`` to it; returns the ``model_swap`` record. On any failure this raises and the old model keeps serving.
    Call it between frames, from the thread that classifies."""
    if not clf.source_path.is_dir():
        raise UsageError(f"reloading needs a bundle directory (or a symlink to one); {clf.source_path} is not one")
    state = bundle_state(clf.source_path)
    if state is None:
        raise ModelLoadError(f"no bundle at {clf.source_path} right now (an update in progress?); try again")
    old = clf.bundle_facts()
    candidate, checked = load_checked(clf, state)
    clf.swap_to(candidate)
    return swap_record(clf.source_path, old, clf.bundle_facts(), checked, clf.verify_key is not None)


class HotReloader:
    """Polls ``clf``'s bundle path in a daemon thread and prepares a checked candidate for the serving thread,
    which takes it with ``take()`` between frames (the stream loop does, when given ``reloader=``). Every
    outcome, a swap or a rejected update, goes to ``on_event`` as one record; the thread never dies of one."""

    def __init__(self, clf: Classifier, on_event: Event, interval: float = 1.0):
        if not clf.source_path.is_dir():
            raise UsageError(f"hot reload watches a bundle directory (or a symlink to one); {clf.source_path} is a file")
        self.clf, self.on_event, self.interval = clf, on_event, interval
        state, served = bundle_state(clf.source_path), bundle_root_of(clf.model_path)
        # Switched while the first model loaded: that counts as a change to check.
        self._seen = state if state is not None and served is not None and state.real == served.resolve() else None
        self._lock = threading.Lock()
        self._pending: tuple[Classifier, dict[str, Any], BundleState] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeport-reload", daemon=True)

    def start(self) -> HotReloader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def poll_once(self) -> None:
        """One look at the path: a new bundle there is checked now (the thread calls this every ``interval``)."""
        state = bundle_state(self.clf.source_path)
        if state is None or (self._seen is not None and state.stamp == self._seen.stamp):
            return  # nothing there (mid-update) or nothing new: keep serving
        self._seen = state  # tried once per change: a failure waits for the path to change again
        try:
            candidate, checked = load_checked(self.clf, state)
        except Exception as exc:  # every failure keeps the old model; the record names the check
            self.on_event(rejected_record(self.clf.source_path, state.real, exc, self.clf.bundle_facts()))
            return
        with self._lock:
            self._pending = (candidate, checked, state)

    def take(self) -> dict[str, Any] | None:
        """In the serving thread, between frames: adopt a checked candidate if one is ready; its swap record."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        candidate, checked, _state = pending
        old = self.clf.bundle_facts()
        self.clf.swap_to(candidate)
        record = swap_record(self.clf.source_path, old, self.clf.bundle_facts(), checked, self.clf.verify_key is not None)
        self.on_event(record)
        return record

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:  # e.g. the path's folder unreadable: reported, and the next look tries again
                self.on_event(rejected_record(self.clf.source_path, None, exc, self.clf.bundle_facts()))
