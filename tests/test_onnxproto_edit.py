"""``onnxproto.last_position_only``: the vocabulary product of a decoder cut to the last
position, by editing the protobuf wire format (no ``onnx`` package at run time). Graphs are
built with ``onnx.helper`` and run with ONNX Runtime; torch-free and fast."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxg.runtime import kvgraph, onnxproto

HIDDEN, VOCAB = 8, 11


def decoder(tail: list[str]) -> bytes:
    """hidden = x * 2 (a stand-in decoder), logits = hidden @ W, then the ``tail`` ops."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Mul", ["x", "two"], ["hidden"]), helper.make_node("MatMul", ["hidden", "W"], ["t0"])]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array(30.0, np.float32), "cap")]
    for i, op in enumerate(tail):
        inputs = {"Div": [f"t{i}", "cap"], "Mul": [f"t{i}", "cap"], "Tanh": [f"t{i}"], "Softmax": [f"t{i}"],
                  "Add": [f"t{i}", "hidden_sum"]}[op]
        nodes.append(helper.make_node(op, inputs, [f"t{i + 1}"]))
    if "Add" in tail:  # a second computed input: not a per-position chain onnxg can cut
        nodes.insert(2, helper.make_node("ReduceSum", ["hidden"], ["hidden_sum"], keepdims=1))
    nodes.append(helper.make_node("Identity", [f"t{len(tail)}"], ["logits"]))
    graph = helper.make_graph(
        nodes, "d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB]),
         helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def run(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})  # type: ignore[return-value]


def cut(data: bytes) -> bytes | None:
    # the Identity at the end is per-position too for this test's chains
    return onnxproto.last_position_only(data, "logits", kvgraph._PER_POSITION | {"Identity"}, kvgraph._PRODUCTS)


@pytest.mark.parametrize("tail", [[], ["Div", "Tanh", "Mul"]])
def test_the_cut_graph_gives_the_last_positions_logits_and_the_same_other_outputs(tail: list[str]) -> None:
    data = decoder(tail)
    edited = cut(data)
    assert edited is not None
    onnx.checker.check_model(onnx.load_from_string(edited))
    x = np.random.default_rng(1).standard_normal((2, 5, HIDDEN)).astype(np.float32)
    (full_logits, full_hidden), (last_logits, hidden) = run(data, x), run(edited, x)
    assert last_logits.shape == (2, 1, VOCAB)
    np.testing.assert_array_equal(last_logits[:, 0], full_logits[:, -1])
    np.testing.assert_array_equal(hidden, full_hidden)
    one = x[:, :1]  # a decode pass (one position) computes exactly what it did
    np.testing.assert_array_equal(run(edited, one)[0], run(data, one)[0])


@pytest.mark.parametrize("tail", [["Softmax"], ["Add"]])
def test_tails_it_does_not_know_are_left_alone(tail: list[str]) -> None:
    assert cut(decoder(tail)) is None


def test_a_graph_without_that_output_is_left_alone() -> None:
    assert onnxproto.last_position_only(decoder([]), "nothing", set(), {"MatMul"}) is None
