"""Layer-wise reconstruction of INT8 weights (AdaRound: Nagel et al., "Up or Down? Adaptive Rounding for
Post-Training Quantization", 2020): learn, per weight, whether to round up or down so that each layer's
output on the calibration images matches FP32, instead of rounding every weight to its nearest step.

Why on the QDQ graph and not on the PyTorch module: onnxruntime's ``quantize_static`` has already chosen
every scale, zero point and where each QuantizeLinear goes (the layout its VNNI and AVX2 kernels fuse into
``QLinearConv``); only the INT8 weight values change here, so the model keeps that layout and speed, and
nothing maps PyTorch modules to graph nodes. Each layer is fitted in graph order on the inputs the
*quantized* model gives it (earlier layers already re-rounded, activations already quantized), against
the FP32 model's output of the same layer: AdaRound's asymmetric reconstruction, which also absorbs part
of the activation quantization error. The gradient steps use torch (export has it); the forward passes
that collect inputs and targets run in onnxruntime, like ``bias_correction`` that follows.

No library fitted (see docs/export.md, "INT8 methods"): NNCF has no AdaRound; AIMET's (aimet-onnx)
installs against our pins but writes its own QDQ layout and pulls in a dashboard stack; Intel Neural
Compressor 3.x has no static-ONNX AdaRound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper
from tqdm.auto import tqdm

__all__ = ["RoundingOptions", "reconstruct_weights", "quantized_layers", "tensor_values"]

_LAYERS = ("Conv", "Gemm")
_ZETA, _GAMMA = 1.1, -0.1  # AdaRound's rectified sigmoid stretch


@dataclass(frozen=True)
class RoundingOptions:
    """How hard each layer is fitted. ``iterations`` Adam steps of ``batch`` calibration images per
    layer; ``seconds`` caps the whole pass (layers left when it runs out keep nearest rounding)."""

    iterations: int = 300
    batch: int = 16
    patch: int = 16  # output window side a convolution trains on
    learning_rate: float = 1e-2
    regularization: float = 0.01  # λ of the rounding regularizer (BRECQ's default)
    seconds: float | None = None
    seed: int = 0


@dataclass
class _Layer:
    node: onnx.NodeProto
    weight: onnx.TensorProto  # the INT8 initializer that gets rewritten
    scale: np.ndarray  # broadcastable to the weight
    float_weight: np.ndarray
    bias: np.ndarray | None
    qmin: int
    qmax: int


def tensor_values(model: onnx.ModelProto, tensors: list[str], images: np.ndarray, input_name: str,
                  batch: int = 10) -> dict[str, np.ndarray]:
    """The values of the named intermediate tensors of ``model`` on ``images`` (onnxruntime, in batches)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors if t not in present)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # other work shares the cores
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    parts: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for start in range(0, len(images), batch):
        for name, out in zip(tensors, session.run(tensors, {input_name: images[start : start + batch]})):
            parts[name].append(out)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _broadcast(scale: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    if scale.ndim == 0:
        return scale.reshape((1,) * ndim)
    shape = [1] * ndim
    shape[axis % ndim] = scale.size
    return scale.reshape(shape)


def quantized_layers(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto,
                     qrange: Callable[[str], tuple[int, int]]) -> list[_Layer]:
    """Conv/Gemm nodes of ``qdq_model`` whose weight is a constant INT8 initializer behind a
    DequantizeLinear, with their FP32 weights from ``float_model`` (matched by node name, which
    onnxruntime's quantizer keeps). ``qrange(float_weight_name)`` is the integer range the quantizer used."""
    float_nodes = {n.name: n for n in float_model.graph.node if n.op_type in _LAYERS}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    inits = {i.name: i for i in qdq_model.graph.initializer}
    producer = {out: n for n in qdq_model.graph.node for out in n.output}
    layers = []
    for node in qdq_model.graph.node:
        fnode = float_nodes.get(node.name)
        dq = producer.get(node.input[1]) if node.op_type in _LAYERS else None
        if fnode is None or dq is None or dq.op_type != "DequantizeLinear" or fnode.input[1] not in float_inits:
            continue
        if dq.input[0] not in inits or inits[dq.input[0]].data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        if node.op_type == "Gemm" and (_attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0):
            continue
        if node.op_type == "Conv" and _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        weight = inits[dq.input[0]]
        q = numpy_helper.to_array(weight)
        if len(dq.input) > 2 and np.any(numpy_helper.to_array(inits[dq.input[2]])):
            continue  # asymmetric weights: not what onnxruntime writes for Conv/Gemm; leave them alone
        scale = _broadcast(numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32), _attr(dq, "axis", 1), q.ndim)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias_dq = producer.get(node.input[2])
            if bias_dq is not None and bias_dq.op_type == "DequantizeLinear" and bias_dq.input[0] in inits:
                bias = (numpy_helper.to_array(inits[bias_dq.input[0]]).astype(np.float64)
                        * numpy_helper.to_array(inits[bias_dq.input[1]]).astype(np.float64)).astype(np.float32)
            elif node.input[2] in inits:
                bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        lo, hi = qrange(fnode.input[1])
        layers.append(_Layer(node, weight, scale, numpy_helper.to_array(float_inits[fnode.input[1]]).astype(np.float32),
                             bias, lo, hi))
    return layers


class _LayerData:
    """A layer's inputs (quantized model) and targets (FP32 model) as torch tensors, its op, and random
    training samples. Convolutions train on ``patch``×``patch`` output windows of the pre-padded input
    (the exact receptive field, so no border effects): a 112×112 map costs 49× less per step."""

    def __init__(self, layer: _Layer, inputs: np.ndarray, targets: np.ndarray, patch: int):
        import torch.nn.functional as F

        node, self.layer = layer.node, layer
        self.bias = None if layer.bias is None else _torch(layer.bias)
        self.y = _torch(targets)
        x = _torch(inputs)
        if node.op_type == "Gemm":
            self.x, self.gemm_t = x.flatten(1), bool(_attr(node, "transB", 0))
            return
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        self.x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])  # ONNX: [top, left, bottom, right]
        self.stride = tuple(_attr(node, "strides", [1, 1]))
        self.dilation = tuple(_attr(node, "dilations", [1, 1]))
        self.groups = _attr(node, "group", 1)
        self.kernel = tuple(layer.float_weight.shape[2:])
        self.patch = (min(patch, self.y.shape[2]), min(patch, self.y.shape[3]))

    def forward(self, x, w):
        import torch.nn.functional as F

        if self.layer.node.op_type == "Gemm":
            return F.linear(x, w if self.gemm_t else w.t(), self.bias)
        return F.conv2d(x, w, self.bias, stride=self.stride, padding=0, dilation=self.dilation, groups=self.groups)

    def sample(self, rng: np.random.Generator, batch: int):
        idx = rng.choice(len(self.x), size=min(batch, len(self.x)), replace=False)
        if self.layer.node.op_type == "Gemm":
            return self.x[idx], self.y[idx]
        (ph, pw), (sh, sw), (dh, dw), (kh, kw) = self.patch, self.stride, self.dilation, self.kernel
        oy, ox = rng.integers(0, self.y.shape[2] - ph + 1), rng.integers(0, self.y.shape[3] - pw + 1)
        window = self.x[:, :, oy * sh : (oy + ph - 1) * sh + (kh - 1) * dh + 1, ox * sw : (ox + pw - 1) * sw + (kw - 1) * dw + 1]
        return window[idx].contiguous(), self.y[:, :, oy : oy + ph, ox : ox + pw][idx].contiguous()

    def mse(self, w) -> float:
        """Mean squared output error over every calibration image."""
        import torch

        with torch.no_grad():
            total = sum(float(((self.forward(self.x[i : i + 16], w) - self.y[i : i + 16]) ** 2).sum())
                        for i in range(0, len(self.x), 16))
        return total / self.y.numel()


def _torch(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _fit_layer(layer: _Layer, data: _LayerData, opts: RoundingOptions, rng: np.random.Generator) -> dict[str, float]:
    """AdaRound one layer; returns its output MSE on the calibration images before and after. The new
    rounding is kept only where it reconstructs better than nearest rounding."""
    import torch

    scale = _torch(layer.scale)
    ratio = _torch(layer.float_weight) / scale
    floor = torch.floor(ratio)
    rest = (ratio - floor).clamp(1e-4, 1 - 1e-4)
    v = torch.nn.Parameter(-torch.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1))  # h(v) = rest at the start
    optimizer = torch.optim.Adam([v], lr=opts.learning_rate)

    def soft() -> Any:
        return (torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)

    def weight(rounding) -> Any:
        return (floor + rounding).clamp(layer.qmin, layer.qmax) * scale

    before = data.mse(weight(torch.round(rest)))
    warmup = int(0.2 * opts.iterations)
    for step in range(opts.iterations):
        x, y = data.sample(rng, opts.batch)
        loss = ((data.forward(x, weight(soft())) - y) ** 2).flatten(1).sum(1).mean()
        if step >= warmup:  # anneal β 20 → 2, pushing every h(v) to 0 or 1
            beta = 2 + 18 * (1 - (step - warmup) / max(1, opts.iterations - warmup))
            loss = loss + opts.regularization * (1 - (2 * soft() - 1).abs().pow(beta)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        hard = (soft() >= 0.5).float()
    after = data.mse(weight(hard))
    if after < before:
        q = (floor + hard).clamp(layer.qmin, layer.qmax).numpy()
        dtype = helper.tensor_dtype_to_np_dtype(layer.weight.data_type)
        layer.weight.CopyFrom(numpy_helper.from_array(q.astype(dtype), layer.weight.name))
    return {"before": before, "after": min(before, after)}


def reconstruct_weights(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, images: np.ndarray, input_name: str,
                        qrange: Callable[[str], tuple[int, int]], options: RoundingOptions | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Re-round the INT8 weights of ``qdq_model`` (in place), layer by layer in graph order, so that each
    layer's output on ``images`` matches ``float_model``'s; returns the manifest's ``reconstruction`` entry."""
    import torch

    opts = options or RoundingOptions()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each step is small: more threads only spin (25-50× slower on 2 shared cores)
    try:
        return _reconstruct(float_model, qdq_model, images, input_name, qrange, opts, progress)
    finally:
        torch.set_num_threads(threads)


def _reconstruct(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, images: np.ndarray, input_name: str,
                 qrange: Callable[[str], tuple[int, int]], opts: RoundingOptions, progress: bool) -> dict[str, Any]:
    import torch

    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    started = time.monotonic()
    layers = quantized_layers(float_model, qdq_model, qrange)
    float_out = {n.name: n.output[0] for n in float_model.graph.node if n.op_type in _LAYERS}
    fitted, before, after = 0, [], []
    for layer in tqdm(layers, desc="AdaRound", unit="layer", disable=not progress, leave=False):
        if opts.seconds is not None and time.monotonic() - started > opts.seconds:
            break
        inputs = tensor_values(qdq_model, [layer.node.input[0]], images, input_name)[layer.node.input[0]]
        targets = tensor_values(float_model, [float_out[layer.node.name]], images, input_name)[float_out[layer.node.name]]
        errors = _fit_layer(layer, _LayerData(layer, inputs, targets, opts.patch), opts, rng)
        before.append(errors["before"])
        after.append(errors["after"])
        fitted += 1
    relative = [a / b for a, b in zip(after, before) if b > 0]
    return {"method": "adaround", "layers": len(layers), "fitted_layers": fitted, "images": len(images),
            "iterations_per_layer": opts.iterations, "seconds": round(time.monotonic() - started, 1),
            "mean_relative_output_mse": round(float(np.mean(relative)), 4) if relative else None}
