"""No phoning home: the telemetry of every library the runtime loads is off unless the user opts in.

onnxruntime records every session in ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db``
(process path, OS, CPU, RAM, a device id) and may send it on; only ``ORT_DISABLE_TELEMETRY=1`` set
*before onnxruntime is imported* stops the write (``disable_telemetry_events()`` alone does not), so
this module is imported first by ``edgeport.runtime``. OpenVINO's runtime (``openvino.Core``) sends
nothing; its telemetry lives in the model-conversion tools (``openvino_telemetry``, used by ``ovc``), which
the runtime never imports — ``OPENVINO_TELEMETRY`` is not read by it, so the opt-out there is the
``opt_in_out --opt_out`` consent file, which we leave to the user.

Opt in with ``EDGEPORT_ALLOW_TELEMETRY=1``: the libraries then behave as their vendors ship them.
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
    if "onnxruntime" in sys.modules:  # imported before edgeport: the environment came too late for its db write
        import warnings

        warnings.warn(f"onnxruntime was imported before edgeport.runtime, so its telemetry db may still be written; "
                      f"import edgeport.runtime first or set ORT_DISABLE_TELEMETRY=1 (or {ALLOW_ENV}=1 to allow it)",
                      stacklevel=3)


def disable_onnxruntime_events(ort) -> None:
    """The second switch onnxruntime has: no telemetry events from this process either."""
    if not telemetry_allowed():
        ort.disable_telemetry_events()
