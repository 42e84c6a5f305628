"""The format registry: each deployment format (named in ``edgeport.runtime.formats``) with the
function that builds it inside the staging bundle from the verified FP32 ONNX model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import CalibrationError
from edgeport.runtime.formats import DEPLOY_FORMATS, DeployFormat, parse_format_names

__all__ = ["BuildContext", "Format", "FORMATS", "register_format", "parse_formats", "require_calibration"]


@dataclass(frozen=True)
class BuildContext:
    staging: Path
    fp32_onnx: Path  # the verified FP32 model, already inside ``staging``
    contract: PreprocessContract
    calib_images: list[Path] = field(default_factory=list)  # representative images for INT8 formats
    calib_method: str | None = None  # onnxruntime engine's calibrator (None: minmax)
    bias_correction: bool = True  # onnxruntime engine: correct INT32 biases after quantizing (formats.bias_correction)
    target_cpu: str = "host"  # the CPU an INT8 model is built for (see formats.int8_scheme.choose_scheme)
    int8_engine: str = "onnxruntime"  # who quantizes onnx-int8: onnxruntime or nncf
    int8_method: str = "ptq"  # onnxruntime engine: nearest rounding, or AdaRound (formats.reconstruction)
    int8_time_budget: float | None = None  # seconds AdaRound may spend; later layers keep nearest rounding
    accuracy: Any = None  # nncf_int8.AccuracyTarget when --eval/--max-drop ask for accuracy control
    onnx_target: Any = None  # onnx_target.OnnxTarget: the IR version/opset every ONNX file may use
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Format(DeployFormat):
    """A deployment format (name, file, backend, precision: the runtime's table) and how export builds it."""

    build: Callable[[BuildContext], dict[str, Any]] | None = None
    needs_calibration: bool = False


#: Built formats in the runtime table's order, whatever order the format modules are imported in.
FORMATS: dict[str, Format] = {}


def register_format(name: str, build: Callable[[BuildContext], dict[str, Any]], needs_calibration: bool = False) -> Format:
    spec = DEPLOY_FORMATS[name]
    fmt = Format(**{f.name: getattr(spec, f.name) for f in fields(spec)}, build=build, needs_calibration=needs_calibration)
    FORMATS[name] = fmt
    ordered = [FORMATS[n] for n in DEPLOY_FORMATS if n in FORMATS]
    FORMATS.clear()
    FORMATS.update((f.name, f) for f in ordered)
    return fmt


def parse_formats(text: str) -> list[Format]:
    """``"onnx,openvino"`` → formats, in registry order; unknown names are an error listing the known ones."""
    names = parse_format_names(text, list(FORMATS))
    if "onnx" not in names:
        names.insert(0, "onnx")  # every other format is derived from the verified FP32 ONNX model
    return [f for f in FORMATS.values() if f.name in names]


def require_calibration(names: list[str], calib_dir: object) -> None:
    """Formats that quantize need representative images: the one place that says so."""
    needs = [n for n in names if n in FORMATS and FORMATS[n].needs_calibration]
    if needs and calib_dir is None:
        raise CalibrationError(f"{', '.join(needs)} need --calib DIR: a folder of representative images (e.g. your train set)")


def _onnx_fp32(ctx: BuildContext) -> dict[str, Any]:
    return {}  # built and verified by the pipeline before any other format


register_format("onnx", _onnx_fp32)
