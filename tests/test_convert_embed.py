"""Embedding conversion: optimum export (+ per-channel int8) through onnxg's backend and pipeline."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from onnxg.convert import optimum
from onnxg.runtime import layout
from onnxg.runtime.embed import OnnxEmbeddingModel
from onnxg.runtime.errors import ConversionError

SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "Wie spät ist es?",
    "print('hello world')",
    "a",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _st(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _op_types(model: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(model), load_external_data=False).graph.node}


def test_tiny_fp32_export_layout(tiny_embed_model: Path) -> None:
    for name in ("model.onnx", "config.json", "tokenizer.json", "vocab.txt", "modules.json",
                 "1_Pooling/config.json", "sentence_bert_config.json"):
        assert (tiny_embed_model / name).is_file(), name
    io = layout.inspect(tiny_embed_model)
    assert io.kind == "embedding" and io.served and io.output == "last_hidden_state" and io.token_states
    assert [i.name for i in io.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert io.outputs[0].name == "last_hidden_state" and len(io.outputs[0].shape) == 3
    info = json.loads((tiny_embed_model / "provenance.test.json").read_text())
    assert info["toolchain"]["optimum-onnx"] == "0.1.0"
    assert info["toolchain"]["transformers"].startswith("4.")
    assert info["verified"] == {"dimensions": 32, "max_length": 128, "pooling": "mean", "normalize": True}
    ops = _op_types(tiny_embed_model / "model.onnx")
    assert "Attention" in ops  # ONNX Runtime's fusions kept ...
    # ... but not SkipLayerNormalization, whose CPU kernel is slower than Add + LayerNormalization
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops, ops
    assert info["export"]["fusions"].get("SkipLayerNormalization") is None
    assert any("--disable_skip_layer_norm" in step for step in info["command"])


def test_tiny_fp32_matches_sentence_transformers(tiny_embed_model: Path, tiny_embed_source: Path) -> None:
    ours = OnnxEmbeddingModel.load(tiny_embed_model).embed(SENTENCES).vectors
    reference = _st(tiny_embed_source).encode(SENTENCES, convert_to_numpy=True)
    assert _cosines(ours, reference).min() >= 0.9999


def test_tiny_int8_through_the_pipeline(tiny_embed_source: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("onnxg.convert.pipeline") is None:
        pytest.skip("the conversion pipeline is not in this tree")
    from onnxg.convert.pipeline import convert

    out = convert(str(tiny_embed_source), output=tmp_path / "tiny-int8", task="embed", precision="int8")
    ops = _op_types(out / "model.onnx")
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention"}, ops
    manifest = json.loads((out / "onnxg.json").read_text())
    assert manifest["precision"] == "int8" and manifest["kind"] == "embedding"
    fp32_size = sum(p.stat().st_size for p in tiny_embed_source.glob("*.safetensors"))
    assert (out / "model.onnx").stat().st_size < fp32_size
    ours = OnnxEmbeddingModel.load(out).embed(SENTENCES).vectors
    reference = _st(tiny_embed_source).encode(SENTENCES, convert_to_numpy=True)
    cos = _cosines(ours, reference)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, cos


@pytest.mark.real
def test_minilm_fp32_and_int8_embed_correctly(minilm_model: Path, minilm_int8_model: Path,
                                              minilm_source: Path) -> None:
    reference = _st(minilm_source).encode(SENTENCES, convert_to_numpy=True)
    fp32 = OnnxEmbeddingModel.load(minilm_model)
    assert (fp32.dimensions, fp32.max_length, fp32.pooling, fp32.normalize) == (384, 256, "mean", True)
    assert _cosines(fp32.embed(SENTENCES).vectors, reference).min() >= 0.9999
    int8 = OnnxEmbeddingModel.load(minilm_int8_model)
    cos = _cosines(int8.embed(SENTENCES).vectors, reference)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, cos
    checked = json.loads((minilm_int8_model / "provenance.test.json").read_text())["verified"]["vs_fp32"]
    assert checked["mean_cosine"] >= 0.99 and checked["min_cosine"] >= 0.97
    # every matrix product is int8, the fused attention's QKV included, after smoothing the
    # layer-norm outputs that feed them (one Mul each: 6 attentions + 6 FFN inputs share 6+6 norms)
    quantization = json.loads((minilm_int8_model / "provenance.test.json").read_text())["quantization"]
    assert quantization["op_types"] == ["MatMul", "Attention"] and quantization["smoothing"]["smoothed"] == 12
    import onnx

    graph = onnx.load(str(minilm_int8_model / "model.onnx")).graph
    assert sum(n.op_type == "QAttention" for n in graph.node) == 6
    assert sum(n.op_type == "Mul" and n.name.endswith("/smooth") for n in graph.node) == 12
    assert not any(n.op_type in ("MatMul", "Attention") for n in graph.node)
    # only the word-embedding table stays fp32
    assert (minilm_int8_model / "model.onnx").stat().st_size < (minilm_model / "model.onnx").stat().st_size * 0.7


def test_pooling_metadata_written_from_extra(tiny_embed_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_embed_model, folder)
    optimum.write_pooling(folder, "cls")
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert config["pooling_mode_cls_token"] and not config["pooling_mode_mean_tokens"]
    model = OnnxEmbeddingModel.load(folder)
    assert model.pooling == "cls"
    with pytest.raises(ConversionError):
        optimum.write_pooling(folder, "median")


@pytest.mark.parametrize(
    ("precision", "extra", "needle"),
    [("int4", {}, "fp32, fp16, int8"), ("fp32", {"block_size": "32"}, "unknown --extra"),
     ("int8", {"fuse": "maybe"}, "expected true or false"), ("int8", {"smooth": "2"}, "from 0 to 1"),
     ("int8", {"smooth": "half"}, "expected a number")],
)
def test_bad_options_fail_before_exporting(tiny_embed_source: Path, tmp_path: Path, precision: str,
                                           extra: dict[str, str], needle: str) -> None:
    with pytest.raises(ConversionError, match=needle):
        optimum.convert(tiny_embed_source, tmp_path / "w", precision=precision, ep="cpu", extra=extra,
                        trust_remote_code=False, log=tmp_path / "log", progress=lambda s: None)


def test_unsupported_sources_are_refused(tiny_embed_source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no config.json"):
        optimum.convert(tmp_path, tmp_path / "w", precision="fp32", ep="cpu", extra={},
                        trust_remote_code=False, log=tmp_path / "log", progress=lambda s: None)
    source = tmp_path / "dense"
    shutil.copytree(tiny_embed_source, source)
    modules = json.loads((source / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (source / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConversionError, match="Dense module"):
        optimum.convert(source, tmp_path / "w", precision="fp32", ep="cpu", extra={},
                        trust_remote_code=False, log=tmp_path / "log", progress=lambda s: None)
