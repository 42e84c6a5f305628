"""Every deployment format's converter, and the registry that looks them up by name.

Importing the package imports each format module, so the registry is complete whoever imports it
(never a caller's side-effect import). Needs the ``[train]`` extra (onnx) and, for the OpenVINO
formats' builds, ``[openvino]`` (imported when a build runs).
"""

from __future__ import annotations

from . import onnx_int8 as _onnx_int8  # noqa: F401  (registers onnx-int8)
from . import openvino as _openvino  # noqa: F401  (registers openvino, openvino-fp16, openvino-int8)
from .registry import FORMATS, BuildContext, Format, parse_formats, register_format, require_calibration

__all__ = ["FORMATS", "BuildContext", "Format", "parse_formats", "register_format", "require_calibration"]
