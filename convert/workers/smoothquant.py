"""SmoothQuant-style scaling of the inputs that dynamic int8 quantization handles worst.

Imported by ``optimum_quantize`` (same toolchain; imports nothing of onnxg). Encoders'
layer-norm outputs have a few channels far larger than the rest, and ONNX Runtime's dynamic
quantization gives a whole activation tensor one scale, so those channels crush the others
to a few levels. Each matrix product fed by a layer norm gets its input divided by a
per-channel factor ``s`` (one ``Mul`` node, since the same layer norm also feeds the
residual) and its weight rows multiplied by ``s``: the same function in exact arithmetic,
an easier one to quantize. ``s = amax(x) ** alpha / amax(w) ** (1 - alpha)`` (Xiao et al.,
2022), ``amax(x)`` measured on sample sentences.

Measured on all-MiniLM-L6-v2, 52 varied sentences against sentence-transformers, AVX-512
VNNI CPU: every matrix product int8 (Q/K/V included) without scaling: mean cosine 0.9915,
minimum 0.9702; with it (alpha 0.5): 0.9944 and 0.9839, better than leaving the attention
projections in fp32 (0.9929, 0.9794).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NORMS = ("LayerNormalization", "EmbedLayerNormalization", "SimplifiedLayerNormalization")


def _calibration_feeds(model_dir: Path, sentences: list[str], inputs: list[Any]) -> list[dict[str, Any]]:
    """One feed per sentence (unpadded, so padding never enters the ranges)."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    feeds = []
    for text in sentences:
        encoded = tokenizer(text, truncation=True, max_length=256)
        ids = np.array([encoded["input_ids"]])
        feed: dict[str, Any] = {}
        for item in inputs:
            dtype = np.int32 if "int32" in item.type else np.int64
            if item.name == "input_ids":
                feed[item.name] = ids.astype(dtype)
            elif item.name == "attention_mask":
                feed[item.name] = np.ones_like(ids, dtype=dtype)
            elif item.name == "position_ids":
                feed[item.name] = np.arange(ids.shape[1])[None].astype(dtype)
            else:
                feed[item.name] = np.zeros_like(ids, dtype=dtype)
        feeds.append(feed)
    return feeds


def _topological(graph: Any) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise RuntimeError("smoothing left the graph with a cycle or a missing input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def smooth(source: Path, target: Path, sentences: list[str], alpha: float, op_types: list[str]) -> dict[str, Any]:
    """Write ``source`` with its norm-fed ``op_types`` inputs smoothed to ``target``; a summary."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    targets = [n for n in graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in weights
               and len(weights[n.input[1]].dims) == 2 and n.input[0] in producer
               and producer[n.input[0]].op_type in NORMS and producer[n.input[0]].output[0] == n.input[0]]
    names = sorted({n.input[0] for n in targets})
    if not names:
        onnx.save(model, str(target))
        return {"smoothed": 0}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    amax: dict[str, Any] = {}
    for feed in _calibration_feeds(source.parent, sentences, session.get_inputs()):
        for name, value in zip(names, session.run(names, feed), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            amax[name] = np.maximum(amax[name], peak) if name in amax else peak
    for name in names:
        consumers = [n for n in targets if n.input[0] == name]
        w = np.concatenate([numpy_helper.to_array(weights[n.input[1]]) for n in consumers], axis=1)
        scale = (np.maximum(amax[name], 1e-5) ** alpha / np.maximum(np.abs(w).max(axis=1), 1e-5) ** (1 - alpha))
        scale = scale.astype(np.float32)
        inverse = numpy_helper.from_array((1 / scale).astype(np.float32), f"{name}/smooth_inverse")
        graph.initializer.append(inverse)
        graph.node.append(helper.make_node("Mul", [name, inverse.name], [f"{name}/smoothed"], name=f"{name}/smooth"))
        for node in consumers:
            node.input[0] = f"{name}/smoothed"
            scaled = numpy_helper.to_array(weights[node.input[1]]) * scale[:, None]
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), node.input[1]))
    _topological(graph)
    onnx.save(model, str(target))
    return {"smoothed": len(targets), "alpha": alpha, "calibration_sentences": len(sentences)}
