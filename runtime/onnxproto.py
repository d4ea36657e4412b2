"""Read what onnxg needs from an ``.onnx`` file without loading any weights, and make the
one edit its runtime needs.

A small reader of the protobuf wire format (no ``onnx`` package needed, which the base
install does not have): the graph's inputs and outputs with their element types and shapes,
the opsets it imports, the (domain, op type) of every node (subgraphs and functions
included), and every external-data reference (file, offset, length) of its initializers.
The file is memory-mapped and big fields (weights) are skipped, never copied, so a
multi-gigabyte model costs a few milliseconds. ``last_position_only`` rewrites a decoder so
that its vocabulary product runs on each row's last position (``runtime/kvgraph.py``), by
copying every other field byte for byte.
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
    for number, wire, value, _ in _spans(buf):
        yield number, wire, value


def _spans(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview, memoryview]]:
    """``_fields`` with each field's whole encoding (what an edit copies unchanged)."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise ProtoError(f"truncated fixed{width * 8}")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ProtoError("truncated field")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        yield number, wire, value, buf[start:pos]


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


# --- the one edit -----------------------------------------------------------------------------

def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s take ten bytes, as protobuf writes them
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(data)) + data


def _int64s(name: str, values: list[int]) -> bytes:
    """A TensorProto of int64 ``values`` (dims [len], data_type 7, packed int64_data)."""
    return (_encode_varint(1 << 3) + _encode_varint(len(values)) + _encode_varint(2 << 3) + _encode_varint(7)
            + _field(7, b"".join(_encode_varint(v) for v in values)) + _field(8, name.encode()))


def _strings(buf: memoryview, number: int) -> list[str]:
    return [_text(value) for num, _, value in _fields(buf) if num == number]


def last_position_only(data: bytes, output: str, per_position: set[str], products: set[str]) -> bytes | None:
    """``data`` (a ModelProto) with a ``Slice`` to the last position (axis 1) before the
    product (an op of ``products``) that ``output`` comes from through ops of
    ``per_position`` whose other inputs are initializers or constants; None when ``output``
    does not come from such a chain."""
    model = list(_spans(memoryview(data)))
    at = next((i for i, (number, _, value, _) in enumerate(model) if number == 7 and isinstance(value, memoryview)),
              None)
    if at is None:
        return None
    graph = list(_spans(model[at][2]))  # type: ignore[arg-type]
    nodes = {i: value for i, (number, _, value, _) in enumerate(graph) if number == 1 and isinstance(value, memoryview)}
    producers = {out: i for i, node in nodes.items() for out in _strings(node, 2)}
    known = {name for number, _, tensor, _ in graph if number == 5 and isinstance(tensor, memoryview)
             for name in _strings(tensor, 8)}
    known |= {out for node in nodes.values() if _strings(node, 4) == ["Constant"] for out in _strings(node, 2)}

    def op(i: int) -> str:
        names = _strings(nodes[i], 4)
        return names[0] if names else ""

    index = producers.get(output)
    while index is not None and op(index) in per_position:
        computed = [name for name in _strings(nodes[index], 1) if name and name not in known]
        if len(computed) != 1:
            return None
        index = producers.get(computed[0])
    if index is None or op(index) not in products or not _strings(nodes[index], 1):
        return None
    hidden = _strings(nodes[index], 1)[0]
    last = f"{hidden}/onnxg_last_position"
    bounds = [f"{last}/{part}" for part in ("starts", "ends", "axes")]
    cut = b"".join(_field(1, name.encode()) for name in (hidden, *bounds))
    cut += _field(2, last.encode()) + _field(3, b"onnxg/last_position") + _field(4, b"Slice")
    product = bytearray()
    renamed = False
    for number, _, _, whole in _spans(nodes[index]):
        if number == 1 and not renamed:
            product += _field(1, last.encode())
            renamed = True
        else:
            product += whole
    body = bytearray()
    for i, (_, _, _, whole) in enumerate(graph):
        if i == index:
            body += _field(1, cut) + _field(1, bytes(product))
        else:
            body += whole
    for name, value in zip(bounds, ([-1], [2**63 - 1], [1]), strict=True):
        body += _field(5, _int64s(name, value))
    return b"".join(_field(7, bytes(body)) if i == at else bytes(whole) for i, (_, _, _, whole) in enumerate(model))
