"""Which ONNX IR version and opset the exported files may use: those the oldest onnxruntime a device
runs can load. Devices often run a vendor-pinned runtime (a JetPack or Yocto image); onnxruntime 1.17
refuses the IR version 10 that today's exporter writes ("Unsupported model IR version: 10, max
supported IR version: 9") although it runs the same graph stamped IR 9 with identical outputs.

The target defaults to the floor this package declares for onnxruntime (``pyproject.toml``:
``onnxruntime>=X.Y``), so a bundle loads on every runtime the install allows; ``--target-runtime
onnxruntime==X.Y`` picks another. The step from an onnxruntime release to the ONNX release it
implements is onnxruntime's published compatibility table (below); the step from an ONNX release to
its IR version and opset is the onnx library's own ``onnx.helper.VERSION_TABLE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

import onnx
from edgeport.runtime.errors import UsageError
from onnx import helper

__all__ = ["OnnxTarget", "ONNXRUNTIME_IMPLEMENTS", "declared_onnxruntime_floor", "resolve_target", "apply_target"]

#: onnxruntime minor release → the ONNX release it implements (onnxruntime's compatibility docs).
#: Releases after the last entry implement at least its ONNX release.
ONNXRUNTIME_IMPLEMENTS: dict[tuple[int, int], str] = {
    (1, 16): "1.14.1",
    (1, 17): "1.15.0",
    (1, 18): "1.16.0",
    (1, 19): "1.16.0",
    (1, 20): "1.17.0",
    (1, 21): "1.17.0",
    (1, 22): "1.18.0",
}


@dataclass(frozen=True)
class OnnxTarget:
    runtime: str  # "onnxruntime==1.17"
    onnx_release: str
    max_ir_version: int
    max_opset: int
    max_ml_opset: int  # the ai.onnx.ml domain

    def to_dict(self) -> dict[str, object]:
        return {"runtime": self.runtime, "onnx_release": self.onnx_release, "max_ir_version": self.max_ir_version,
                "max_opset": self.max_opset, "max_ml_opset": self.max_ml_opset}


def declared_onnxruntime_floor() -> str:
    """``X.Y`` from this package's ``onnxruntime>=X.Y`` requirement."""
    for requirement in metadata.requires("edgeport") or []:
        match = re.match(r"onnxruntime\s*>=\s*(\d+\.\d+)", requirement)
        if match:
            return match.group(1)
    raise UsageError("edgeport's metadata declares no onnxruntime floor; pass --target-runtime onnxruntime==X.Y")


def _onnx_release_versions(release: str) -> tuple[int, int, int]:
    """(IR version, default opset, ai.onnx.ml opset) of an ONNX release, from onnx's own table."""
    for row in helper.VERSION_TABLE:
        if row[0] == release:
            return row[1], row[2], row[3]
    raise UsageError(f"the installed onnx library does not know ONNX release {release}; upgrade onnx")


def resolve_target(text: str | None = None) -> OnnxTarget:
    """``onnxruntime==X.Y`` (None: the declared floor) → the IR version and opset files may use."""
    spec = text or f"onnxruntime=={declared_onnxruntime_floor()}"
    match = re.fullmatch(r"onnxruntime==(\d+)\.(\d+)(?:\.\d+)?", spec.strip())
    if not match:
        raise UsageError(f"--target-runtime {spec!r}: write onnxruntime==X.Y, e.g. onnxruntime==1.17")
    version = (int(match.group(1)), int(match.group(2)))
    known = sorted(ONNXRUNTIME_IMPLEMENTS)
    if version < known[0]:
        raise UsageError(f"--target-runtime {spec}: onnxruntime older than {known[0][0]}.{known[0][1]} is not supported; "
                         "upgrade the device's onnxruntime")
    release = ONNXRUNTIME_IMPLEMENTS[max(v for v in known if v <= version)]
    ir_version, opset, ml_opset = _onnx_release_versions(release)
    return OnnxTarget(f"onnxruntime=={version[0]}.{version[1]}", release, ir_version, opset, ml_opset)


def _used_domains(model: onnx.ModelProto) -> set[str]:
    used: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            used.add(node.domain)
            for attr in node.attribute:
                visit(attr.g.node)
                for graph in attr.graphs:
                    visit(graph.node)

    visit(model.graph.node)
    for function in model.functions:
        visit(function.node)
    return used


def apply_target(model: onnx.ModelProto, target: OnnxTarget) -> None:
    """Stamp ``model`` with the target's IR version when it is newer, and drop the imports of operator
    domains no node uses (onnxruntime's ``quant_pre_process`` imports all of its own, ``ai.onnx.ml`` at
    version 5 among them, which onnxruntime 1.17 refuses). The opset is chosen at export
    (``onnx_fp32.export_onnx``); a model above the target's opsets is a usage error, not a silent downgrade."""
    used = _used_domains(model)
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    limits = {"": target.max_opset, "ai.onnx": target.max_opset, "ai.onnx.ml": target.max_ml_opset}
    for entry in model.opset_import:
        if entry.domain in limits and entry.version > limits[entry.domain]:
            raise UsageError(f"the model uses opset {entry.version} of {entry.domain or 'ai.onnx'} but {target.runtime} "
                             f"implements up to {limits[entry.domain]}; choose a newer --target-runtime")
    if model.ir_version > target.max_ir_version:
        model.ir_version = target.max_ir_version
        onnx.checker.check_model(model)  # anything the older IR cannot express fails here, at export
