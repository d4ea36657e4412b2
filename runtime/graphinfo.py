"""The inputs and outputs of an ONNX file, read without loading it.

``onnxg models`` and ``kind()`` need to know whether a graph takes strings (an end-to-end
model, which needs the extensions' custom ops just to open a session) before anything
loads it, and the embedding runtime reads its output's shape before choosing how to pool.
The ``onnx`` package is not a base dependency and parses every weight, so this uses
``onnxproto``'s wire-format reader, which memory-maps the file and skips the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnxg.runtime import onnxproto
from onnxg.runtime.errors import ModelLoadError

ValueInfo = onnxproto.ValueInfo  # name, elem_type ("float", "int64", "string", ...), shape


@dataclass(frozen=True)
class GraphIO:
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]

    @property
    def has_string_inputs(self) -> bool:
        return any(v.elem_type == "string" for v in self.inputs)


def read(path: Path) -> GraphIO:
    """The graph's declared inputs and outputs; ModelLoadError if it is not an ONNX graph."""
    try:
        info = onnxproto.read(Path(path))
    except (OSError, onnxproto.ProtoError) as exc:
        raise ModelLoadError(f"cannot read the ONNX graph {path}: {exc}",
                             hint="the file may be truncated or not an ONNX model") from None
    if not info.inputs and not info.outputs:
        raise ModelLoadError(f"{path} holds no ONNX graph", hint="the file may be truncated or not an ONNX model")
    return GraphIO(info.inputs, info.outputs)


def has_string_inputs(path: Path) -> bool:
    return read(path).has_string_inputs
