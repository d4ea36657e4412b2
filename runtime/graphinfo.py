"""The inputs and outputs of an ONNX file, read without loading it.

``onnxg models`` and ``kind()`` need to know whether a graph takes strings (an end-to-end
model, which needs the extensions' custom ops just to open a session) before anything
loads it. The ``onnx`` package is not a base dependency and parses every weight, so this
walks the protobuf wire format itself and seeks past nodes and initializers: a 2 GB model
costs a few small reads.

Field numbers (onnx.proto): ModelProto.graph = 7; GraphProto.input = 11, output = 12;
ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type = 1; Tensor.elem_type = 1,
shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1, dim_param = 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from onnxg.runtime.errors import ModelLoadError

STRING = 8
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 8: "string", 9: "bool",
              10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass(frozen=True)
class ValueInfo:
    name: str
    elem_type: int
    shape: tuple[int | str | None, ...] | None  # None: unknown rank

    @property
    def dtype(self) -> str:
        return ELEM_TYPES.get(self.elem_type, f"type{self.elem_type}")


@dataclass(frozen=True)
class GraphIO:
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]

    @property
    def has_string_inputs(self) -> bool:
        return any(v.elem_type == STRING for v in self.inputs)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _read_varint(handle: BinaryIO) -> int | None:
    shift = result = 0
    while True:
        raw = handle.read(1)
        if not raw:
            if shift == 0:
                return None
            raise ValueError("truncated varint")
        result |= (raw[0] & 0x7F) << shift
        if not raw[0] & 0x80:
            return result
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) for each field of an in-memory message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _skip(handle: BinaryIO, wire: int) -> None:
    if wire == 0:
        _read_varint(handle)
    elif wire == 2:
        handle.seek(_read_varint(handle) or 0, 1)
    elif wire == 1:
        handle.seek(8, 1)
    elif wire == 5:
        handle.seek(4, 1)
    else:
        raise ValueError(f"unsupported wire type {wire}")


def _value_info(data: bytes) -> ValueInfo:
    name, elem_type, shape = "", 0, None
    for field, _, value in _fields(data):
        if field == 1:
            name = value.decode("utf-8", "replace")
        elif field == 2:
            for tfield, _, tvalue in _fields(value):
                if tfield != 1:  # not a tensor (sequence, map, ...)
                    continue
                for xfield, _, xvalue in _fields(tvalue):
                    if xfield == 1:
                        elem_type = xvalue
                    elif xfield == 2:
                        shape = tuple(_dim(d) for f, _, d in _fields(xvalue) if f == 1)
    return ValueInfo(name, elem_type, shape)


def _dim(data: bytes) -> int | str | None:
    for field, _, value in _fields(data):
        if field == 1:
            return value
        if field == 2:
            return value.decode("utf-8", "replace")
    return None


def read(path: Path) -> GraphIO:
    """The graph's declared inputs and outputs."""
    inputs: list[ValueInfo] = []
    outputs: list[ValueInfo] = []
    try:
        with open(path, "rb") as handle:
            while (key := _read_varint(handle)) is not None:
                field, wire = key >> 3, key & 7
                if not (field == 7 and wire == 2):
                    _skip(handle, wire)
                    continue
                size = _read_varint(handle) or 0
                end = handle.tell() + size
                while handle.tell() < end:
                    gkey = _read_varint(handle)
                    if gkey is None:
                        break
                    gfield, gwire = gkey >> 3, gkey & 7
                    if gfield in (11, 12) and gwire == 2:
                        info = _value_info(handle.read(_read_varint(handle) or 0))
                        (inputs if gfield == 11 else outputs).append(info)
                    else:
                        _skip(handle, gwire)
                break
    except (OSError, ValueError, IndexError) as exc:
        raise ModelLoadError(f"cannot read the ONNX graph {path}: {exc}",
                             hint="the file may be truncated or not an ONNX model") from None
    if not inputs and not outputs:
        raise ModelLoadError(f"{path} holds no ONNX graph", hint="the file may be truncated or not an ONNX model")
    return GraphIO(inputs, outputs)


def has_string_inputs(path: Path) -> bool:
    return read(path).has_string_inputs
