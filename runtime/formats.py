"""The deployment formats a bundle can hold, by name: where the file sits in the bundle, which backend
runs it, its precision. The one table behind edge-export's builders (``edgeport.export.formats``),
edge-predict's ``--model-format`` and edge-bench's ``--formats``; torch-free so devices have it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

__all__ = ["DeployFormat", "DEPLOY_FORMATS", "format_names", "parse_format_names"]


@dataclass(frozen=True)
class DeployFormat:
    name: str
    file: str  # the file the runtime opens, relative to the bundle
    backend: str  # runtime backend that runs it (``backends.BACKENDS``)
    precision: str  # fp32, fp16 or int8
    extra_files: tuple[str, ...] = ()  # other files the format needs (an IR's .bin)

    @property
    def files(self) -> list[str]:
        return [self.file, *self.extra_files]


#: In bundle and listing order: FP32 before reduced precision, ONNX before OpenVINO.
DEPLOY_FORMATS: dict[str, DeployFormat] = {
    f.name: f
    for f in (
        DeployFormat("onnx", "model.onnx", "onnxruntime", "fp32"),
        DeployFormat("onnx-int8", "model.int8.onnx", "onnxruntime", "int8"),
        DeployFormat("openvino", "openvino/model.xml", "openvino", "fp32", ("openvino/model.bin",)),
        DeployFormat("openvino-fp16", "openvino-fp16/model.xml", "openvino", "fp16", ("openvino-fp16/model.bin",)),
        DeployFormat("openvino-int8", "openvino-int8/model.xml", "openvino", "int8", ("openvino-int8/model.bin",)),
    )
}


def format_names() -> list[str]:
    return list(DEPLOY_FORMATS)


def parse_format_names(text: str, known: list[str] | None = None, option: str = "--formats") -> list[str]:
    """``"onnx, openvino"`` → names in the order given; unknown or empty is a usage error naming the choices."""
    known = known if known is not None else format_names()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"{option}: unknown format(s) {unknown or text!r}; choose from {', '.join(known)}")
    return names
