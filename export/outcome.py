"""How an export ends, as a kind and a documented exit code (used by the CLI and the report)."""

from __future__ import annotations

from edgeport.runtime.errors import AccuracyGateError, EdgeportError, SpeedGateError, VerificationError

__all__ = ["EXIT_CODES", "failure_kind"]

#: Exit codes of ``edge-export``; stable, documented in the README, tested.
EXIT_CODES = {
    "passed": 0,
    "internal": 1,  # a bug or an unexpected library failure
    "usage": 2,  # bad arguments, missing/unusable source, data or dependency
    "verification": 3,  # an exported format does not reproduce PyTorch
    "accuracy_gate": 4,  # a format is further below PyTorch than --max-drop
    "speed_gate": 5,  # an INT8 format is not faster than FP32 with --require-speedup
}


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, VerificationError):
        return "verification"
    if isinstance(exc, AccuracyGateError):
        return "accuracy_gate"
    if isinstance(exc, SpeedGateError):
        return "speed_gate"
    if isinstance(exc, (EdgeportError, ValueError, FileNotFoundError, ImportError)):
        return "usage"
    return "internal"
