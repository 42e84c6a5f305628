"""Tiny real ONNX models and bundles for the hostile-input probes: a colour classifier (the mean of each
normalised channel times a weight matrix) built with the ``onnx`` helpers, run by a real onnxruntime
session. Seconds to build, so the probes need no export of a real network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from edgeport.runtime.contract import METADATA_KEY, PreprocessContract
from edgeport.runtime.manifest import LABELS_NAME, MANIFEST_SCHEMA_VERSION, file_entries, write_json
from onnx import TensorProto, helper, numpy_helper

COLOURS = ("red", "green", "blue")


def colour_model(path: Path, labels: tuple[str, ...] = COLOURS, weights: np.ndarray | None = None,
                 dynamic_classes: bool = False, external: str | None = None, contract: dict | None = None,
                 features: bool = False) -> Path:
    """An ONNX model: input (N, 3, 224, 224) → GlobalAveragePool → Flatten → MatMul W (3 × classes).

    ``weights`` defaults to 10 × identity (padded): a red picture scores "red". ``dynamic_classes`` leaves
    the output's class dimension symbolic; ``external`` stores the weights in that external-data file;
    ``features`` adds the second output ``features``: the 3 channel means the MatMul reads.
    """
    n = len(labels)
    w = weights if weights is not None else np.pad(np.eye(3, dtype=np.float32) * 10, ((0, 0), (0, max(0, n - 3))))[:, :n]
    w = np.asarray(w, np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"])]
    inits = [numpy_helper.from_array(w, "W")]
    if dynamic_classes:
        # The class count comes out of a computation on the input (a Slice whose end is a ReduceMax), so neither
        # shape inference nor constant folding knows the output width: the session says [N, ?].
        inits += [numpy_helper.from_array(np.array([w.shape[1]], np.float32), "K"),
                  numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([1], np.int64), "one")]
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "nought"))
        nodes += [helper.make_node("ReduceSum", ["flat"], ["total"], keepdims=0),  # ties K to the input: no folding
                  helper.make_node("Mul", ["total", "nought"], ["no_change"]),
                  helper.make_node("Add", ["K", "no_change"], ["K_runtime"]),
                  helper.make_node("ReduceMax", ["K_runtime"], ["kmax"], keepdims=1),
                  helper.make_node("Cast", ["kmax"], ["end"], to=TensorProto.INT64),
                  helper.make_node("Slice", ["W", "zero", "end", "one"], ["Wd"]),
                  helper.make_node("MatMul", ["flat", "Wd"], ["logits"])]
    else:
        nodes.append(helper.make_node("MatMul", ["flat", "W"], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "C" if dynamic_classes else n])]
    if features:
        nodes.append(helper.make_node("Identity", ["flat"], ["features"]))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3]))
    graph = helper.make_graph(nodes, "colour", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    text = PreprocessContract(labels=labels).to_json() if contract is None else __import__("json").dumps(contract)
    helper.set_model_props(model, {METADATA_KEY: text})
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=external,
                        size_threshold=0)
    else:
        onnx.save_model(model, path)
    return path


def write_manifest(bundle: Path, formats: dict | None = None, files: dict | None = None) -> Path:
    """A manifest as edge-export writes it: every file hashed, one FP32 ONNX format."""
    formats = formats or {"onnx": {"file": "model.onnx", "files": ["model.onnx"], "backend": "onnxruntime",
                                   "precision": "fp32"}}
    write_json(bundle / "manifest.json", {"schema_version": MANIFEST_SCHEMA_VERSION, "formats": formats,
                                          "files": files if files is not None else file_entries(bundle)})
    return bundle


def colour_bundle(bundle: Path, **model_kw) -> Path:
    """A bundle directory around ``colour_model``: model.onnx, labels.txt, manifest.json."""
    colour_model(bundle / "model.onnx", **model_kw)
    labels = model_kw.get("labels", COLOURS)
    (bundle / LABELS_NAME).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return write_manifest(bundle)


def add_openvino_format(bundle: Path) -> Path:
    """The bundle's model.onnx as an OpenVINO IR (openvino/model.xml + .bin, contract in rt_info), listed
    in the manifest as edge-export lists it. Read with ``Core.read_model``: no conversion tool (and its
    telemetry) involved."""
    import openvino as ov
    from edgeport.runtime.backends import OPENVINO_RT_PATH

    model = ov.Core().read_model(str(bundle / "model.onnx"))
    contract = onnx.load(bundle / "model.onnx").metadata_props
    model.set_rt_info(next(p.value for p in contract if p.key == METADATA_KEY), OPENVINO_RT_PATH)
    (bundle / "openvino").mkdir(exist_ok=True)
    ov.save_model(model, bundle / "openvino" / "model.xml", compress_to_fp16=False)
    manifest = __import__("json").loads((bundle / "manifest.json").read_text())
    manifest["formats"]["openvino"] = {"file": "openvino/model.xml", "files": ["openvino/model.xml", "openvino/model.bin"],
                                       "backend": "openvino", "precision": "fp32"}
    return write_manifest(bundle, formats=manifest["formats"])


def colour_bundle_with_kit(bundle: Path, labels: tuple[str, ...] = COLOURS) -> Path:
    """``colour_bundle`` plus a conformance kit written by the exporter's own code (from four solid-colour JPEGs made
    beside the bundle), so the bundle passes the self-test that a hot reload runs before it swaps."""
    from edgeport.export.conformance import write_conformance_kit
    from PIL import Image

    colour_bundle(bundle, labels=labels)
    sources = bundle.parent / f"{bundle.name}-kit-images"
    sources.mkdir(parents=True, exist_ok=True)
    images = []
    for i, rgb in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200), (153, 145, 132))):
        images.append(sources / f"{i}.jpg")
        Image.new("RGB", (96, 72), rgb).save(images[-1], quality=95)
    fp32 = {"onnx": {"file": "model.onnx", "files": ["model.onnx"], "backend": "onnxruntime", "precision": "fp32"}}
    write_conformance_kit(bundle, fp32, images, {"onnx": {"max_abs_logit_diff": 0.0}})
    return write_manifest(bundle, formats=fp32)
