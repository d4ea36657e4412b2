"""The embedding runtime: pooling, tokenizers, lengths, batching, graph variants, accuracy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from modelkit import cache
from modelkit import sentencepiece as spkit
from onnxg.runtime.embed import OnnxEmbeddingModel
from onnxg.runtime.contracts import EmbeddingResult
from onnxg.runtime.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError

TEXTS = [
    "The weather is lovely today.",
    "a",
    "Stock markets fell sharply on Monday after the central bank raised rates again.",
    "東京は日本の首都です。",
    "def add(a, b):\n    return a + b",
    "I love pizza 🍕🍕!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "",
]


def _copy(folder: Path, tmp_path: Path, name: str = "m") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _reference_states(source: Path, texts: list[str], max_length: int) -> list[np.ndarray]:
    """Token states from transformers, one text at a time (no padding at all)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    model = AutoModel.from_pretrained(str(source)).eval()
    states = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids])
            states.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].numpy())
    return states


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# -- pooling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mean", "cls", "last", "max"])
def test_pooling_modes_match_transformers(tiny_embed_model: Path, tiny_embed_source: Path, mode: str) -> None:
    model = OnnxEmbeddingModel.load(tiny_embed_model, pooling=mode)
    assert model.pooling == mode and model.normalize
    got = model.embed(TEXTS, batch_size=3).vectors  # mixed lengths: padding inside batches
    pick = {"mean": lambda s: s.mean(0), "cls": lambda s: s[0], "last": lambda s: s[-1], "max": lambda s: s.max(0)}
    want = np.stack([_unit(pick[mode](s)) for s in _reference_states(tiny_embed_source, TEXTS, 128)])
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_multi_vector_gives_one_vector_per_token(tiny_embed_model: Path, tiny_embed_source: Path) -> None:
    model = OnnxEmbeddingModel.load(tiny_embed_model, pooling="multi-vector", normalize=False)
    result = model.embed(TEXTS, batch_size=4)
    assert isinstance(result.vectors, list) and len(result.vectors) == len(TEXTS)
    for got, want, count in zip(result.vectors, _reference_states(tiny_embed_source, TEXTS, 128),
                                result.token_counts, strict=True):
        assert got.shape == (count, 32)
        np.testing.assert_allclose(got, want, atol=2e-4)
    colbert = OnnxEmbeddingModel.load(tiny_embed_model, pooling="colbert").embed(["one two"]).vectors[0]
    np.testing.assert_allclose(np.linalg.norm(colbert, axis=1), 1.0, atol=1e-5)


def test_pooling_and_normalization_come_from_the_metadata(tiny_embed_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_embed_model, tmp_path)
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    modules = [m for m in json.loads((folder / "modules.json").read_text()) if "Normalize" not in m["type"]]
    (folder / "modules.json").write_text(json.dumps(modules))
    model = OnnxEmbeddingModel.load(folder)
    assert (model.pooling, model.normalize) == ("cls", False)
    vectors = model.embed(["hello there", "general kenobi"]).vectors
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    np.testing.assert_allclose(vectors, OnnxEmbeddingModel.load(tiny_embed_model, pooling="cls", normalize=False)
                               .embed(["hello there", "general kenobi"]).vectors, atol=1e-6)
    for name in ("modules.json", "1_Pooling/config.json"):  # no metadata: mean + normalise
        (folder / name).unlink()
    assert (OnnxEmbeddingModel.load(folder).pooling, OnnxEmbeddingModel.load(folder).normalize) == ("mean", True)


def test_bad_pooling_is_a_clear_error(tiny_embed_model: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown pooling") as caught:
        OnnxEmbeddingModel.load(tiny_embed_model, pooling="median")
    assert caught.value.param == "pooling"


# -- lengths, counts, order --------------------------------------------------------------------

def test_truncation_token_counts_and_errors(tiny_embed_model: Path) -> None:
    model = OnnxEmbeddingModel.load(tiny_embed_model)
    assert model.max_length == 128  # sentence_bert_config.json's max_seq_length
    long_text = "word " * 500
    result = model.embed(["hello world", long_text])
    assert result.token_counts == [4, 128] and result.total_tokens == 132  # [CLS] hello world [SEP]
    strict = OnnxEmbeddingModel.load(tiny_embed_model, truncate=False)
    assert strict.embed(["hello world"]).token_counts == [4]
    with pytest.raises(ContextLengthExceeded, match="input 1 is longer than the model's maximum of 128"):
        strict.embed(["fine", long_text])
    short = OnnxEmbeddingModel.load(tiny_embed_model, max_length=8)
    assert short.embed([long_text]).token_counts == [8]
    with pytest.raises(InvalidRequest, match="512 positions") as caught:
        OnnxEmbeddingModel.load(tiny_embed_model, max_length=5000)
    assert caught.value.param == "max_length"


def test_results_keep_input_order_whatever_the_batching(tiny_embed_model: Path) -> None:
    model = OnnxEmbeddingModel.load(tiny_embed_model)
    texts = [("lorem ipsum " * (i % 7 + 1)) + str(i) for i in range(23)]
    one_by_one = np.stack([model.embed([t]).vectors[0] for t in texts])
    for batch_size in (1, 4, 32):
        result = model.embed(texts, batch_size=batch_size)
        np.testing.assert_allclose(result.vectors, one_by_one, atol=2e-5)
        assert result.token_counts == [model.embed([t]).token_counts[0] for t in texts]
    assert not np.allclose(one_by_one[0], one_by_one[1])


def test_embed_is_thread_safe(tiny_embed_model: Path) -> None:
    model = OnnxEmbeddingModel.load(tiny_embed_model, threads=1)
    texts = [f"sentence number {i} " * (i % 5 + 1) for i in range(40)]
    expected = model.embed(texts).vectors
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = model.embed(texts[k:] + texts[:k], batch_size=5).vectors

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        np.testing.assert_allclose(got, np.roll(expected, -k, axis=0), atol=2e-5)


def test_embed_tokens_and_input_validation(tiny_embed_model: Path) -> None:
    from tokenizers import Tokenizer

    model = OnnxEmbeddingModel.load(tiny_embed_model)
    tok = Tokenizer.from_file(str(tiny_embed_model / "tokenizer.json"))
    tok.no_padding()  # the bundled file pads everything to 128
    ids = [e.ids for e in tok.encode_batch(["hi there", "x"])]
    np.testing.assert_allclose(model.embed_tokens(ids).vectors, model.embed(["hi there", "x"]).vectors, atol=1e-6)
    assert model.embed_tokens([[101] * 300]).token_counts == [128]
    for bad in ([[]], [[-1]], [[10**6]], [["a"]]):
        with pytest.raises(InvalidRequest):
            model.embed_tokens(bad)
    with pytest.raises(InvalidRequest):
        model.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        model.embed(["ok", 3])  # type: ignore[list-item]
    empty = model.embed([])
    assert isinstance(empty, EmbeddingResult) and empty.vectors.shape == (0, 32) and empty.total_tokens == 0
    with pytest.raises(InvalidRequest):
        OnnxEmbeddingModel.load(tiny_embed_model, threads=0)


def test_broken_folders_give_load_errors(tiny_embed_model: Path, tmp_path: Path) -> None:
    no_tokenizer = _copy(tiny_embed_model, tmp_path, "a")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        OnnxEmbeddingModel.load(no_tokenizer)
    no_model = _copy(tiny_embed_model, tmp_path, "b")
    (no_model / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="no model.onnx"):
        OnnxEmbeddingModel.load(no_model)
    truncated = _copy(tiny_embed_model, tmp_path, "c")
    data = (truncated / "model.onnx").read_bytes()
    (truncated / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        OnnxEmbeddingModel.load(truncated)


# -- graph variants -------------------------------------------------------------------------------

def _edit_graph(folder: Path, edit) -> None:
    import onnx

    model = onnx.load(str(folder / "model.onnx"))
    edit(model.graph, onnx.helper, onnx.TensorProto)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))


def test_graph_without_token_type_ids(tiny_embed_model: Path, tmp_path: Path) -> None:
    def drop(graph, helper, tp) -> None:
        graph.input.remove(next(i for i in graph.input if i.name == "token_type_ids"))
        graph.node.insert(0, helper.make_node("Shape", ["input_ids"], ["ids_shape"]))
        graph.node.insert(1, helper.make_node("ConstantOfShape", ["ids_shape"], ["token_type_ids"],
                                              value=helper.make_tensor("zero", tp.INT64, [1], [0])))

    folder = _copy(tiny_embed_model, tmp_path)
    _edit_graph(folder, drop)
    got = OnnxEmbeddingModel.load(folder).embed(TEXTS).vectors
    np.testing.assert_allclose(got, OnnxEmbeddingModel.load(tiny_embed_model).embed(TEXTS).vectors, atol=1e-5)


def test_graph_with_a_pooled_2d_output(tiny_embed_model: Path, tmp_path: Path) -> None:
    def pool_inside(graph, helper, tp) -> None:
        graph.initializer.append(helper.make_tensor("axis2", tp.INT64, [1], [2]))
        graph.initializer.append(helper.make_tensor("axis1", tp.INT64, [1], [1]))
        graph.node.extend([
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=tp.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["last_hidden_state", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["summed", "count"], ["sentence_embedding"]),
        ])
        graph.output.pop()
        graph.output.append(helper.make_tensor_value_info("sentence_embedding", tp.FLOAT, ["batch", 32]))

    folder = _copy(tiny_embed_model, tmp_path)
    _edit_graph(folder, pool_inside)
    model = OnnxEmbeddingModel.load(folder)
    assert model.dimensions == 32
    got = model.embed(TEXTS, batch_size=3).vectors
    np.testing.assert_allclose(got, OnnxEmbeddingModel.load(tiny_embed_model).embed(TEXTS).vectors, atol=1e-5)
    with pytest.raises(InvalidRequest, match="pooled"):
        OnnxEmbeddingModel.load(folder, pooling="multi-vector")


def test_string_input_graphs_are_handed_to_the_e2e_runtime(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    words = ["hello", "world", "cat"]
    table = np.arange(4 * 3, dtype=np.float32).reshape(4, 3) + 1
    graph = helper.make_graph(
        [helper.make_node("LabelEncoder", ["text"], ["ids"], domain="ai.onnx.ml", keys_strings=words,
                          values_int64s=[1, 2, 3], default_int64=0),
         helper.make_node("Gather", ["table", "ids"], ["embedding"])],
        "e2e", [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("table", TensorProto.FLOAT, [4, 3], table.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    folder = tmp_path / "e2e"
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    from onnxg.runtime.e2e import E2EModel
    from onnxg.runtime.loading import load_embedding

    loaded = load_embedding(folder, normalize=False)
    assert isinstance(loaded, E2EModel)
    with pytest.raises(ModelLoadError, match="not an embedding graph over token ids"):
        OnnxEmbeddingModel.load(folder)
    np.testing.assert_allclose(loaded.embed(["cat", "nothing"]).vectors, table[[3, 0]])
    with pytest.raises(InvalidRequest):
        loaded.embed_tokens([[1, 2]])


# -- SentencePiece -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sp_model() -> Path:
    return cache.cached("sp-albert", spkit.SPEC, spkit.build_model)


def test_sentencepiece_and_converted_tokenizer_agree(sp_model: Path, tmp_path: Path) -> None:
    import sentencepiece
    from tokenizers import Tokenizer

    model_dir = sp_model / "model"
    assert (model_dir / "spiece.model").is_file()
    assert (model_dir / "tokenizer.json").is_file(), "the export's converted tokenizer.json was dropped"
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "spiece.model"))
    fast = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    texts = spkit.corpus(40, seed=7) + ["Paris river", "naïve café über"]
    for text in texts:
        assert fast.encode(text, add_special_tokens=False).ids == sp.EncodeAsIds(text), text
    assert fast.encode("city river", add_special_tokens=False).tokens[0].startswith("▁")

    hf = OnnxEmbeddingModel.load(model_dir)
    sp_only = _copy(model_dir, tmp_path)
    (sp_only / "tokenizer.json").unlink()
    spm = OnnxEmbeddingModel.load(sp_only)
    assert (hf.tokenizer.kind, spm.tokenizer.kind) == ("tokenizer.json", "sentencepiece")
    assert spm.tokenizer.encode(["city river"]).ids == hf.tokenizer.encode(["city river"]).ids
    assert hf.tokenizer.encode(["city river"]).ids[0][0] == sp.PieceToId("[CLS]")
    np.testing.assert_allclose(spm.embed(texts).vectors, hf.embed(texts).vectors, atol=1e-5)
    long_result = spm.embed(["city " * 400])
    assert long_result.token_counts == [128]
    with pytest.raises(ContextLengthExceeded):
        OnnxEmbeddingModel.load(sp_only, truncate=False).embed(["city " * 400])


def test_a_converter_that_drops_the_word_marker_is_caught(sp_model: Path, tmp_path: Path) -> None:
    from onnxg.convert.optimum import check_sentencepiece

    folder = _copy(sp_model / "model", tmp_path)
    assert "agrees" in (check_sentencepiece(folder) or "")
    data = json.loads((folder / "tokenizer.json").read_text())

    def never(node) -> None:  # what a careless converter does: no ▁ before the first word
        if isinstance(node, dict):
            if node.get("type") == "Metaspace":
                node["prepend_scheme"] = "never"
            for value in node.values():
                never(value)
        elif isinstance(node, list):
            for value in node:
                never(value)

    never(data["pre_tokenizer"])
    (folder / "tokenizer.json").write_text(json.dumps(data))
    note = check_sentencepiece(folder) or ""
    assert "removed" in note and not (folder / "tokenizer.json").exists()
    assert OnnxEmbeddingModel.load(folder).tokenizer.kind == "sentencepiece"


# -- the real all-MiniLM-L6-v2 ------------------------------------------------------------------------

def test_cpu_sessions_keep_add_and_layer_norm_unfused(tmp_path: Path) -> None:
    """ONNX Runtime would fuse Add + LayerNormalization into its slower SkipLayerNormalization."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from onnxg.runtime import embed

    hidden = 16

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", hidden])

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "skip"], ["sum"]),
         helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["out"], axis=-1, epsilon=1e-12)],
        "residual", [value("x"), value("skip")], [value("out")],
        [numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),
         numpy_helper.from_array(np.zeros(hidden, np.float32), "beta")])
    model = tmp_path / "residual.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))

    def ops(path: Path) -> list[str]:
        return [node.op_type for node in onnx.load(str(path)).graph.node]

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "plain.onnx")
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    assert ops(tmp_path / "plain.onnx") == ["SkipLayerNormalization"]  # what ONNX Runtime does by default
    session = embed.open_session(model, 1, optimized_copy=tmp_path / "ours.onnx")
    assert ops(tmp_path / "ours.onnx") == ["Add", "LayerNormalization"]
    x, skip = np.random.default_rng(0).standard_normal((2, 2, 3, hidden)).astype(np.float32)
    out = session.run(None, {"x": x, "skip": skip})[0]
    total = x + skip
    expected = (total - total.mean(-1, keepdims=True)) / np.sqrt(total.var(-1, keepdims=True) + 1e-12)
    assert np.allclose(out, expected, atol=1e-4)


def test_no_torch_or_transformers_on_the_embedding_path(tiny_embed_model: Path) -> None:
    code = (
        "import sys\nfrom onnxg.runtime.embed import OnnxEmbeddingModel\n"
        f"m = OnnxEmbeddingModel.load({str(tiny_embed_model)!r})\nm.embed(['hello'])\n"
        "bad = [n for n in ('torch', 'transformers', 'sentence_transformers', 'optimum') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.real
def test_minilm_uses_its_own_max_length_not_the_tokenizer_json_one(minilm_model: Path) -> None:
    data = json.loads((minilm_model / "tokenizer.json").read_text())
    assert data["truncation"]["max_length"] == 128  # the trap is there...
    model = OnnxEmbeddingModel.load(minilm_model)
    assert model.max_length == 256  # ...and avoided
    assert model.embed(["word " * 300, "short"]).token_counts == [256, 3]


ACCURACY_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome and everyone loves it.",
    "The cat sits outside on the warm porch.",
    "How do I reset my password without access to my email?",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "Quarterly revenue rose 12% to $4.2 billion, beating estimates.",
    "The patient presented with acute chest pain radiating to the left arm.",
    "Photosynthesis converts light energy into chemical energy.",
    "Machine learning models can overfit small training sets.",
    "Please leave the package at the back door.",
    "I can't believe it's snowing again in April!",
    "Le chat dort sur le canapé depuis ce matin.",
    "Où se trouve la gare la plus proche ?",
    "Der Zug nach Berlin hat zwanzig Minuten Verspätung.",
    "Ich habe heute keine Zeit für ein langes Meeting.",
    "El banco central subió los tipos de interés.",
    "¿Dónde está la biblioteca municipal?",
    "O tempo hoje está ótimo para ir à praia.",
    "Il gatto è sul tavolo della cucina.",
    "Москва — столица России.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "我喜欢在周末和朋友一起喝咖啡。",
    "서울은 대한민국의 수도입니다.",
    "القاهرة هي عاصمة مصر.",
    "नई दिल्ली भारत की राजधानी है।",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "const add = (a, b) => a + b; console.log(add(2, 3));",
    "for f in *.txt; do wc -l \"$f\"; done",
    "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }",
    "git rebase -i HEAD~3 && git push --force-with-lease",
    "I love pizza 🍕🍕🍕!",
    "Great job team 🎉🚀👏",
    "😂😂😂",
    "a",
    "?",
    "42",
    "https://example.com/path?query=1&sort=desc",
    "user@example.com wrote: see attached.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "the quick brown fox jumps over the lazy dog",
    "Prices: €5.99, £4.50, ¥700, $6.25.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, " * 8,
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_unit(a) * _unit(b)).sum(axis=1)


def _neighbours(vectors: np.ndarray) -> np.ndarray:
    sims = _unit(vectors) @ _unit(vectors).T
    np.fill_diagonal(sims, -2)
    return sims.argmax(axis=1)


@pytest.mark.real
def test_minilm_accuracy_against_sentence_transformers(minilm_model: Path, minilm_int8_model: Path,
                                                       minilm_source: Path) -> None:
    from sentence_transformers import SentenceTransformer

    assert len(ACCURACY_SENTENCES) >= 50
    st = SentenceTransformer(str(minilm_source), device="cpu")
    reference = st.encode(ACCURACY_SENTENCES, convert_to_numpy=True)
    fp32 = OnnxEmbeddingModel.load(minilm_model).embed(ACCURACY_SENTENCES)
    assert fp32.token_counts[-1] == 256  # the over-long one is truncated like sentence-transformers does
    cos32 = _cos(fp32.vectors, reference)
    assert cos32.min() >= 0.9999, (cos32.min(), ACCURACY_SENTENCES[int(cos32.argmin())])
    int8 = OnnxEmbeddingModel.load(minilm_int8_model).embed(ACCURACY_SENTENCES).vectors
    cos8 = _cos(int8, reference)
    agreement = float((_neighbours(int8) == _neighbours(reference)).mean())
    print(f"\nall-MiniLM-L6-v2 vs sentence-transformers on {len(ACCURACY_SENTENCES)} sentences: "
          f"fp32 min cosine {cos32.min():.6f}; int8 mean {cos8.mean():.4f}, min {cos8.min():.4f}, "
          f"nearest-neighbour agreement {agreement:.0%}")
    assert cos8.mean() >= 0.99 and cos8.min() >= 0.97, (cos8.mean(), cos8.min())
    assert agreement >= 0.85  # reported above; 90% measured (random near-ties among unrelated sentences)
