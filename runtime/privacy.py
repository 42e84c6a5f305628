"""No phoning home: the telemetry of every library the runtime loads is off unless the user opts in.

- onnxruntime records every session in ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db``
  (process path, OS, CPU, RAM, a device id) and may send it on. Only ``ORT_DISABLE_TELEMETRY=1`` set
  *before onnxruntime is imported* stops the write (``disable_telemetry_events()`` alone does not).
- OpenVINO: ``import openvino`` imports its converter (``openvino.tools.ovc``), which starts the
  ``openvino_telemetry`` client: with no consent file it counts as consent, and it writes a client id and
  usage stats under ``~/intel`` on every import, and sends events when models are converted (so does
  NNCF). Both fall back to "no telemetry" when ``openvino_telemetry`` cannot be imported, which is the only
  switch there is from inside a process; it is the one used here.

So this module is imported first by ``edgeport.runtime`` (and thereby by every edgeport CLI). Opt in with
``EDGEPORT_ALLOW_TELEMETRY=1``: the libraries then behave as their vendors ship them.
"""

from __future__ import annotations

import os
import sys

__all__ = ["ALLOW_ENV", "telemetry_allowed", "apply_telemetry_policy", "disable_onnxruntime_events"]

#: Set to 1 to let the libraries send their telemetry (off by default on a device).
ALLOW_ENV = "EDGEPORT_ALLOW_TELEMETRY"


def telemetry_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def apply_telemetry_policy() -> None:
    """Turn library telemetry off through the environment (before the libraries are imported)."""
    if telemetry_allowed():
        return
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    # None in sys.modules makes ``import openvino_telemetry`` raise ImportError: OpenVINO's converter and NNCF
    # then use their documented no-telemetry stubs.
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    late = [name for name in ("onnxruntime", "openvino") if name in sys.modules]
    if late:  # imported before edgeport: the switches came too late for them
        import warnings

        warnings.warn(f"{' and '.join(late)} imported before edgeport.runtime, so library telemetry may already be "
                      f"on; import edgeport.runtime first (or set {ALLOW_ENV}=1 to allow it)", stacklevel=3)


def disable_onnxruntime_events(ort) -> None:
    """The second switch onnxruntime has: no telemetry events from this process either."""
    if not telemetry_allowed():
        ort.disable_telemetry_events()
