"""Which external-data files an ONNX model references, read from its protobuf bytes without the ``onnx``
package (not a device dependency). A bundle must list and hash every one of them: an in-bundle ``w.bin``
that the manifest does not vouch for would otherwise load silently."""

from __future__ import annotations

from .errors import ModelLoadError

__all__ = ["external_data_files"]

# Field numbers from onnx.proto3 (they are part of the ONNX IR's stable wire format).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """(field number, sub-buffer) of every length-delimited field; other wire types are skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("field runs past the end")
            yield number, buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != len(buf):
        raise ValueError("field runs past the end")


def _tensor_location(tensor: memoryview) -> str | None:
    for number, entry in _fields(tensor):
        if number == _TENSOR_EXTERNAL_DATA:
            parts = dict(_fields(entry))
            if bytes(parts.get(_ENTRY_KEY, b"")) == b"location":
                return bytes(parts.get(_ENTRY_VALUE, b"")).decode("utf-8", "surrogateescape")
    return None


def external_data_files(model: bytes, source: str = "model") -> set[str]:
    """Every external-data ``location`` in ``model`` (initializers, sparse initializers, node attributes,
    subgraphs and functions), as written in the file (relative to the model's folder)."""
    found: set[str] = set()
    # (kind, buffer): walked iteratively so a hostile nesting of subgraphs cannot exhaust the stack.
    stack: list[tuple[str, memoryview]] = [("model", memoryview(model))]
    try:
        while stack:
            kind, buf = stack.pop()
            if kind == "tensor":
                if (location := _tensor_location(buf)) is not None:
                    found.add(location)
                continue
            for number, sub in _fields(buf):
                if kind == "model":
                    if number == _MODEL_GRAPH:
                        stack.append(("graph", sub))
                    elif number == _MODEL_FUNCTIONS:
                        stack.append(("function", sub))
                elif kind == "graph":
                    if number == _GRAPH_NODE:
                        stack.append(("node", sub))
                    elif number == _GRAPH_INITIALIZER:
                        stack.append(("tensor", sub))
                    elif number == _GRAPH_SPARSE_INITIALIZER:
                        stack.append(("sparse", sub))
                elif kind == "function" and number == _FUNCTION_NODE:
                    stack.append(("node", sub))
                elif kind == "node" and number == _NODE_ATTRIBUTE:
                    stack.append(("attribute", sub))
                elif kind == "sparse" and number in (_SPARSE_VALUES, _SPARSE_INDICES):
                    stack.append(("tensor", sub))
                elif kind == "attribute":
                    if number in (_ATTR_T, _ATTR_TENSORS):
                        stack.append(("tensor", sub))
                    elif number in (_ATTR_G, _ATTR_GRAPHS):
                        stack.append(("graph", sub))
                    elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
                        stack.append(("sparse", sub))
    except ValueError as exc:
        raise ModelLoadError(f"{source}: not a well-formed ONNX file ({exc}); re-run edge-export") from exc
    return found
