"""Deployment formats, looked up by name. Each builds its files inside the staging bundle from the
verified FP32 ONNX model and reports what it did for the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeport.runtime.contract import PreprocessContract

__all__ = ["BuildContext", "Format", "FORMATS", "register_format", "parse_formats"]


@dataclass(frozen=True)
class BuildContext:
    staging: Path
    fp32_onnx: Path  # the verified FP32 model, already inside ``staging``
    contract: PreprocessContract
    calib_images: list[Path] = field(default_factory=list)  # representative images for INT8 formats
    calib_method: str | None = None  # onnxruntime engine's calibrator (None: minmax)
    bias_correction: bool = True  # onnxruntime engine: correct INT32 biases after quantizing (export.bias_correction)
    target_cpu: str = "host"  # the CPU an INT8 model is built for (see export.quantize.choose_scheme)
    int8_engine: str = "onnxruntime"  # who quantizes onnx-int8: onnxruntime or nncf
    accuracy: Any = None  # nncf_int8.AccuracyTarget when --eval/--max-drop ask for accuracy control
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Format:
    name: str
    rank: int  # position in bundles and listings: FP32 before INT8, ONNX before OpenVINO
    file: str  # the file the runtime opens, relative to the bundle
    backend: str  # runtime backend that runs it
    precision: str
    build: Callable[[BuildContext], dict[str, Any]]
    needs_calibration: bool = False
    extra_files: tuple[str, ...] = ()  # other files the format needs (an IR's .bin)

    @property
    def files(self) -> list[str]:
        return [self.file, *self.extra_files]


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    ordered = sorted(FORMATS.values(), key=lambda f: f.rank)  # whatever order modules are imported in
    FORMATS.clear()
    FORMATS.update((f.name, f) for f in ordered)
    return fmt


def parse_formats(text: str) -> list[Format]:
    """``"onnx,openvino"`` → formats, in registry order; unknown names are an error listing the known ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown format(s) {unknown or text!r}; choose from {', '.join(FORMATS)}")
    if "onnx" not in names:
        names.insert(0, "onnx")  # every other format is derived from the verified FP32 ONNX model
    return [f for f in FORMATS.values() if f.name in names]


def _onnx_fp32(ctx: BuildContext) -> dict[str, Any]:
    return {}  # built and verified by the pipeline before any other format


register_format(Format("onnx", 0, "model.onnx", "onnxruntime", "fp32", _onnx_fp32))
