"""Read what onnxg needs from an ``.onnx`` file without loading any weights.

A small reader of the protobuf wire format (no ``onnx`` package needed, which the base
install does not have): the graph's inputs and outputs with their element types and shapes,
the opsets it imports, the (domain, op type) of every node (subgraphs and functions
included), and every external-data reference (file, offset, length) of its initializers.
The file is memory-mapped and big fields (weights) are skipped, never copied, so a
multi-gigabyte model costs a few milliseconds.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ELEM_TYPES = {
    1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64", 16: "bfloat16",
    17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4",
}


class ProtoError(ValueError):
    """Not a readable ONNX protobuf file."""


@dataclass
class ValueInfo:
    name: str
    elem_type: str | None  # "float", "int64", "string", ... (None: not a tensor)
    shape: list[int | str | None] | None  # int: fixed, str: symbolic, None: unknown


@dataclass
class ExternalRef:
    tensor: str
    location: str
    offset: int
    length: int | None


@dataclass
class OnnxInfo:
    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)  # "" is the default ONNX domain
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    ops: set[tuple[str, str]] = field(default_factory=set)  # (domain, op_type)
    external: list[ExternalRef] = field(default_factory=list)
    initializers: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def domains(self) -> set[str]:
        return {domain for domain, _ in self.ops}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtoError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value): ints for varint/fixed, memoryviews for bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            if pos + 8 > end:
                raise ProtoError("truncated fixed64")
            yield number, wire, int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ProtoError("truncated field")
            yield number, wire, buf[pos:pos + size]
            pos += size
        elif wire == 5:
            if pos + 4 > end:
                raise ProtoError("truncated fixed32")
            yield number, wire, int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")


def _text(value: int | memoryview) -> str:
    return bytes(value).decode("utf-8", "replace") if isinstance(value, memoryview) else ""


def _signed(value: int | memoryview) -> int:
    number = value if isinstance(value, int) else 0
    return number - (1 << 64) if number >= 1 << 63 else number


def _pairs(buf: memoryview) -> tuple[str, str]:
    key = val = ""
    for number, _, value in _fields(buf):
        if number == 1:
            key = _text(value)
        elif number == 2:
            val = _text(value)
    return key, val


def _value_info(buf: memoryview) -> ValueInfo:
    name, elem, shape = "", None, None
    for number, _, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2 and isinstance(value, memoryview):
            for tnum, _, tval in _fields(value):
                if tnum == 1 and isinstance(tval, memoryview):  # TypeProto.tensor_type
                    for fnum, _, fval in _fields(tval):
                        if fnum == 1 and isinstance(fval, int):
                            elem = ELEM_TYPES.get(fval, f"type{fval}")
                        elif fnum == 2 and isinstance(fval, memoryview):
                            shape = []
                            for dnum, _, dval in _fields(fval):
                                if dnum == 1 and isinstance(dval, memoryview):
                                    dim: int | str | None = None
                                    for knum, _, kval in _fields(dval):
                                        if knum == 1:
                                            dim = _signed(kval)
                                        elif knum == 2:
                                            dim = _text(kval)
                                    shape.append(dim)
    return ValueInfo(name, elem, shape)


def _tensor(buf: memoryview, info: OnnxInfo) -> None:
    name, location, external = "", 0, {}
    for number, _, value in _fields(buf):
        if number == 8:
            name = _text(value)
        elif number == 13 and isinstance(value, memoryview):
            key, val = _pairs(value)
            external[key] = val
        elif number == 14 and isinstance(value, int):
            location = value
    if location == 1 or external:
        length = external.get("length")
        info.external.append(ExternalRef(
            tensor=name,
            location=external.get("location", ""),
            offset=int(external.get("offset", "0") or 0),
            length=int(length) if length else None,
        ))


def _node(buf: memoryview, info: OnnxInfo) -> None:
    op, domain = "", ""
    for number, _, value in _fields(buf):
        if number == 4:
            op = _text(value)
        elif number == 7:
            domain = _text(value)
        elif number == 5 and isinstance(value, memoryview):  # attribute: may hold subgraphs
            for anum, _, aval in _fields(value):
                if anum in (6, 11) and isinstance(aval, memoryview):
                    _graph(aval, info, top=False)
    info.ops.add(("" if domain == "ai.onnx" else domain, op))


def _graph(buf: memoryview, info: OnnxInfo, *, top: bool) -> None:
    for number, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if number == 1:
            _node(value, info)
        elif number == 5:
            info.initializers += top
            _tensor(value, info)
        elif number == 11 and top:
            info.inputs.append(_value_info(value))
        elif number == 12 and top:
            info.outputs.append(_value_info(value))


def parse_bytes(data: bytes | memoryview) -> OnnxInfo:
    buf = memoryview(data)
    info = OnnxInfo()
    functions: set[tuple[str, str]] = set()
    seen_graph = False
    for number, _, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            info.ir_version = value
        elif number == 8 and isinstance(value, memoryview):
            domain, version = "", 0
            for onum, _, oval in _fields(value):
                if onum == 1:
                    domain = _text(oval)
                elif onum == 2 and isinstance(oval, int):
                    version = oval
            info.opsets["" if domain == "ai.onnx" else domain] = version
        elif number == 7 and isinstance(value, memoryview):
            seen_graph = True
            _graph(value, info, top=True)
        elif number == 14 and isinstance(value, memoryview):
            key, val = _pairs(value)
            info.metadata[key] = val
        elif number == 25 and isinstance(value, memoryview):  # FunctionProto: its nodes
            name = domain = ""
            for fnum, _, fval in _fields(value):
                if fnum == 7 and isinstance(fval, memoryview):
                    _node(fval, info)
                elif fnum == 1:
                    name = _text(fval)
                elif fnum == 10:
                    domain = _text(fval)
            functions.add((domain, name))
    if not seen_graph or info.ir_version == 0:
        raise ProtoError("no ONNX graph in this file")
    # Calls of a model-local function look like nodes of its domain: they are not custom ops.
    info.ops -= functions
    return info


def read(path: Path) -> OnnxInfo:
    """Parse ``path``'s structure; ProtoError when it is not an ONNX model."""
    if path.stat().st_size == 0:
        raise ProtoError("empty file")
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    message = ""
    try:
        return parse_bytes(view)
    except ProtoError as exc:
        message = str(exc)
    except (IndexError, ValueError, OverflowError) as exc:
        message = f"malformed protobuf ({type(exc).__name__})"
    finally:
        # Slices of the map die with the parse (or with the exception above, cleared by now).
        try:
            view.release()
            mapped.close()
        except BufferError:
            pass
    raise ProtoError(message)
