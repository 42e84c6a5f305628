"""One small error hierarchy for every stage, and the one table that maps error types to exit codes.

Every message says what went wrong *and* what to do about it. Every CLI ends through
``exit_code_for``: an error edgeport raises on purpose exits with its type's code, anything else is an
internal error (exit 1). Lives in the runtime because the runtime must raise them without torch.
"""

from __future__ import annotations

__all__ = [
    "EdgeportError",
    "UsageError",
    "MissingDependencyError",
    "ConfigError",
    "CalibrationError",
    "ContractError",
    "ImageDecodeError",
    "FrameSourceError",
    "ModelLoadError",
    "WorkerFailedError",
    "IntegrityError",
    "ManifestError",
    "SignatureError",
    "ConformanceError",
    "DataError",
    "WeightsNotFoundError",
    "VerificationError",
    "GateError",
    "AccuracyGateError",
    "SpeedGateError",
    "LayerNameError",
    "DeliveryError",
    "EXIT_CODES",
    "ExitCode",
    "exit_code_for",
]


class EdgeportError(Exception):
    """Base class of every error edgeport raises on purpose."""


class UsageError(EdgeportError):
    """Bad arguments or options: a value out of range, options that do not go together."""


class MissingDependencyError(UsageError):
    """An optional dependency (an extra) is needed for what was asked; the message names the pip install."""


class ConfigError(UsageError):
    """The camera box's config is invalid: the message names the key and what a valid value looks like, and for
    a TOML file (``edge-predict serve --config``) the file and line too."""


class ContractError(EdgeportError):
    """The preprocessing contract is missing, malformed or inconsistent with the model."""


class ImageDecodeError(EdgeportError):
    """A file (or frame) could not be decoded into an RGB image."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class FrameSourceError(EdgeportError):
    """A video, camera or watched folder cannot be opened (the stream cannot start at all)."""


class ModelLoadError(EdgeportError):
    """A model file or bundle could not be found or opened."""


class IntegrityError(ModelLoadError):
    """A bundle file no longer matches the sha256 recorded in its manifest."""


class ManifestError(ModelLoadError):
    """A bundle's manifest.json is malformed, oversized, or points outside its bundle; the message names the field."""
class SignatureError(IntegrityError):
    """A verify key is set and the bundle is unsigned, signed by another key, or changed after signing."""


class ConformanceError(ModelLoadError):
    """The bundle's conformance kit is missing or malformed, or this runtime does not reproduce it."""


class DataError(EdgeportError):
    """A training/evaluation image folder is unusable (no classes, empty class folder, ...)."""


class CalibrationError(DataError):
    """INT8 calibration images are missing or undecodable."""


class WeightsNotFoundError(EdgeportError):
    """Pretrained weights could not be found offline nor downloaded."""


class VerificationError(EdgeportError):
    """An exported model does not reproduce the PyTorch model on real images."""


class GateError(EdgeportError):
    """A release gate failed; the export report says which format missed which budget."""


class AccuracyGateError(GateError):
    """A deployed format is further below PyTorch than ``--max-drop`` allows."""


class SpeedGateError(GateError):
    """An INT8 format is not faster than FP32 while ``--require-speedup`` is set."""


class LayerNameError(EdgeportError):
    """A layer asked for by name (explain tools) is not in the model; the message lists valid names."""


class WorkerFailedError(EdgeportError):
    """A process of a multi-process training job (torchrun) died, failed or timed out; the job was stopped."""


class DeliveryError(EdgeportError):
    """Records were classified but never reached their destination (the MQTT broker was away, or its queue full)."""


class ExitCode:
    """Exit codes of every edgeport CLI; stable and documented (docs/exit-codes.md)."""

    OK = 0
    INTERNAL = 1  # a bug or an unexpected library failure (traceback with --debug)
    USAGE = 2  # bad arguments, an unusable model, bundle, source, data or a missing dependency
    VERIFICATION = 3  # an exported format does not reproduce PyTorch
    ACCURACY_GATE = 4  # a format is further below PyTorch than --max-drop
    SPEED_GATE = 5  # an INT8 format is not faster than FP32 with --require-speedup
    SOME_INPUTS_FAILED = 6  # edge-predict: some inputs had error records, the rest were classified
    SELF_TEST_FAILED = 3  # edge-predict --self-test: this runtime does not reproduce the export (as VERIFICATION)
    WORKER_FAILED = 7  # edge-train --nproc-per-node: a training process died or timed out; torchrun stopped the job
    RECORDS_UNDELIVERED = 8  # edge-predict serve --mqtt: records never reached the broker (counted in the summary)
    INTERRUPTED = 130  # Ctrl-C, after the summary of what was done
    TERMINATED = 143  # SIGTERM (systemd, Docker): the current frame finished, the summary printed (128 + 15)


#: Error type → (kind, exit code). The most specific type that matches wins (looked up along the MRO).
EXIT_CODES: dict[type[EdgeportError], tuple[str, int]] = {
    EdgeportError: ("usage", ExitCode.USAGE),
    VerificationError: ("verification", ExitCode.VERIFICATION),
    AccuracyGateError: ("accuracy_gate", ExitCode.ACCURACY_GATE),
    SpeedGateError: ("speed_gate", ExitCode.SPEED_GATE),
    WorkerFailedError: ("worker_failed", ExitCode.WORKER_FAILED),
    DeliveryError: ("records_undelivered", ExitCode.RECORDS_UNDELIVERED),
}


def exit_code_for(exc: BaseException) -> tuple[str, int]:
    """``(kind, code)`` for an exception: its type's entry in ``EXIT_CODES``, else internal (1)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", ExitCode.INTERRUPTED
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return "internal", ExitCode.INTERNAL
