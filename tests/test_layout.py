"""One folder inspector: ``onnxg check`` passes exactly when the runtime loads and runs a folder.

Each case builds a tiny folder (graphs made with ``onnx.helper``, a WordLevel
``tokenizer.json`` made with ``tokenizers``) in a temporary folder; no converted model, no
torch. For every case the layout, the store and the checker name the same kind, and the
checker's verdict (with and without its smoke run) is the runtime loader's: it loads the
folder and embeds a sentence, or refuses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxg.convert.check import check
from onnxg.runtime import layout, loading, store
from onnxg.runtime.errors import ModelLoadError, OnnxgError

VOCAB = ["[PAD]", "[UNK]", "hello", "world", "the", "cat", "sat", "paris"]
DIM = 4
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ---------------------------------------------------------------------------- builders
def tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


def _save(path: Path, nodes: list, inputs: list, outputs: list, initializers: list, *, ml: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=9), str(path))


def embedding_graph(path: Path, *, inputs: tuple[str, ...] = TOKEN_INPUTS, output: str = "last_hidden_state",
                    pooled: bool = False, int_type: int = TensorProto.INT64,
                    extra: tuple[str, int] | None = None) -> None:
    """input_ids -> an embedding table -> [batch, seq, DIM] token states (plus 0 x every other
    input, so each is used), or their mean [batch, DIM] when ``pooled``; ``extra``: one more
    input (name, element type) the graph also consumes."""
    table = (np.arange(len(VOCAB) * DIM, dtype=np.float32).reshape(len(VOCAB), DIM) % 5) + 1
    init = [helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.flatten().tolist()),
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    ids = "ids64"
    nodes = [helper.make_node("Cast", ["input_ids"], [ids], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", ids], ["s0"])]
    names = [n for n in inputs if n != "input_ids"] + ([extra[0]] if extra else [])
    for k, name in enumerate(names):
        nodes += [helper.make_node("Cast", [name], [f"f{k}"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", [f"f{k}", "axis2"], [f"u{k}"]),
                  helper.make_node("Mul", [f"u{k}", "zero"], [f"z{k}"]),
                  helper.make_node("Add", [f"s{k}", f"z{k}"], [f"s{k + 1}"])]
    states = f"s{len(names)}"
    if pooled:
        nodes.append(helper.make_node("ReduceMean", [states], [output], axes=[1], keepdims=0))
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", DIM])
    else:
        nodes.append(helper.make_node("Identity", [states], [output]))
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", "seq", DIM])
    declared = [helper.make_tensor_value_info(n, int_type, ["batch", "seq"]) for n in inputs]
    if extra:
        declared.append(helper.make_tensor_value_info(extra[0], extra[1], ["batch", "seq"]))
    _save(path, nodes, declared, [out], init)


def string_graph(path: Path, *, extra_input: bool = False) -> None:
    """texts -> LabelEncoder -> float [n, 1] (standard ONNX-ML ops)."""
    nodes = [helper.make_node("LabelEncoder", ["text"], ["score"], domain="ai.onnx.ml",
                              keys_strings=["hello", "world"], values_floats=[1.0, 2.0], default_float=0.5),
             helper.make_node("Unsqueeze", ["score", "axes"], ["embedding"])]
    inputs = [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("lang", TensorProto.INT64, ["n"]))
    _save(path, nodes, inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 1])],
          [helper.make_tensor("axes", TensorProto.INT64, [1], [1])], ml=True)


def numeric_graph(path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
          [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.5] * 12)])
    (path.parent / "model_io.json").write_text(json.dumps({"embedding_output": "y", "text_input": None}))


def decoder_graph(path: Path) -> None:
    """What a causal LM export looks like from outside: past_key_values inputs."""
    nodes = [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)]
    _save(path, nodes, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
                        helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["b", 2, "p", 4])],
          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s"])], [])


def _with_tokenizer(build: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(folder: Path) -> None:
        build(folder)
        tokenizer(folder)
    return both


def _genai_missing_files(folder: Path) -> None:
    config = {"model": {"type": "llama", "context_length": 128, "vocab_size": len(VOCAB),
                        "decoder": {"filename": "model.onnx", "session_options": {}}},
              "search": {"max_length": 64}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    tokenizer(folder)


# name: (build, layout kind, whether the runtime serves it)
CASES: dict[str, tuple[Callable[[Path], None], str | None, bool]] = {
    "model.onnx at the root": (_with_tokenizer(lambda f: embedding_graph(f / "model.onnx")), "embedding", True),
    "only onnx/model.onnx": (_with_tokenizer(lambda f: embedding_graph(f / "onnx" / "model.onnx")), "embedding", True),
    "only model_quantized.onnx": (
        _with_tokenizer(lambda f: embedding_graph(f / "model_quantized.onnx")), "embedding", True),
    "the only *.onnx": (_with_tokenizer(lambda f: embedding_graph(f / "encoder.onnx")), "embedding", True),
    "model.onnx beside another graph": (_with_tokenizer(lambda f: (
        embedding_graph(f / "model.onnx"), embedding_graph(f / "other.onnx", inputs=("input_ids",))
    )), "embedding", True),
    "several graphs, none model.onnx": (_with_tokenizer(lambda f: (
        embedding_graph(f / "a.onnx"), embedding_graph(f / "b.onnx"))), "embedding", False),
    "no token_type_ids": (
        _with_tokenizer(lambda f: embedding_graph(f / "model.onnx", inputs=("input_ids", "attention_mask"))),
        "embedding", True),
    "only input_ids": (_with_tokenizer(lambda f: embedding_graph(f / "model.onnx", inputs=("input_ids",))),
                       "embedding", True),
    "position_ids": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", inputs=("input_ids", "attention_mask", "position_ids"))), "embedding", True),
    "int32 inputs": (_with_tokenizer(lambda f: embedding_graph(f / "model.onnx", int_type=TensorProto.INT32)),
                     "embedding", True),
    "pooled sentence_embedding": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", output="sentence_embedding", pooled=True)), "embedding", True),
    "token states under another name": (
        _with_tokenizer(lambda f: embedding_graph(f / "model.onnx", output="states")), "embedding", True),
    "only an unknown 2-D output": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", output="logits", pooled=True)), "embedding", False),
    "pooler_output is not a sentence embedding": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", output="pooler_output", pooled=True)), "embedding", False),
    "an unknown float input": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", extra=("pixel_values", TensorProto.FLOAT))), "embedding", False),
    "an unknown integer input": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", extra=("lang_ids", TensorProto.INT64))), "embedding", False),
    "float input_ids": (_with_tokenizer(lambda f: embedding_graph(
        f / "model.onnx", inputs=("input_ids",), int_type=TensorProto.FLOAT)), "embedding", False),
    "no tokenizer": (lambda f: embedding_graph(f / "model.onnx"), "embedding", False),
    "a string graph": (lambda f: string_graph(f / "model.onnx"), "e2e", True),
    "a string graph under onnx/": (lambda f: string_graph(f / "onnx" / "model.onnx"), "e2e", True),
    "a string graph with another input": (lambda f: string_graph(f / "model.onnx", extra_input=True), "e2e", False),
    "a string graph with broken model_io.json": (lambda f: (
        string_graph(f / "model.onnx"), (f / "model_io.json").write_text("{ nope")), "e2e", False),
    "model_io.json naming a missing output": (lambda f: (
        string_graph(f / "model.onnx"), (f / "model_io.json").write_text('{"embedding_output": "nope"}')),
        "e2e", False),
    "a decoder without genai_config.json": (_with_tokenizer(lambda f: decoder_graph(f / "model.onnx")), "chat", False),
    "genai_config.json with its files missing": (_genai_missing_files, "chat", False),
    "a damaged model.onnx": (lambda f: (f / "model.onnx").write_bytes(b"\xff\xfe not a protobuf" * 10), None, False),
    "no model at all": (lambda f: (f / "readme.txt").write_text("hello"), None, False),
}


def _build(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    CASES[name][0](folder)
    return folder


def _runtime_ok(folder: Path) -> bool:
    """The runtime's verdict: the loader loads the folder and (for an embedding model) embeds a sentence."""
    try:
        model = loading.load_model(folder, threads=1)
    except OnnxgError:
        return False
    if model.kind == "chat":
        model.close()
        return True
    vectors = np.asarray(model.embed(["hello world, the cat sat in paris"]).vectors, dtype=np.float32)
    return vectors.shape[0] == 1 and bool(np.isfinite(vectors).all()) and float(np.abs(vectors).sum()) > 0


@pytest.mark.parametrize("name", list(CASES))
def test_check_passes_exactly_when_the_runtime_serves_the_folder(tmp_path: Path, name: str) -> None:
    folder = _build(tmp_path, name)
    _, kind, served = CASES[name]
    found = layout.inspect(folder)
    assert found.kind == kind, found
    assert found.served == served, found.issues
    assert store.describe(folder).kind == (kind or "?")
    report, smoke = check(folder), check(folder, run=True)
    assert report.kind == smoke.kind == (kind or "unknown")
    failures = [(i.name, i.detail) for i in smoke.items if not i.ok]
    assert report.ok == smoke.ok == served, failures
    assert _runtime_ok(folder) == served
    if not served:  # the loader's reason is one of the checker's failures
        with pytest.raises(OnnxgError) as caught:
            loading.load_model(folder)
        if found.issues:
            assert caught.value.message == found.problem
            assert found.issues[0].topic in {i.name for i in report.items if not i.ok}


def test_the_graph_file_rule(tmp_path: Path) -> None:
    for name in ("onnx/model_quantized.onnx", "model_quantized.onnx", "onnx/model.onnx", "model.onnx"):
        embedding_graph(tmp_path / name)
        assert layout.inspect(tmp_path).graph == tmp_path / name
    assert layout.inspect(tmp_path).tokenizer is None


def test_a_numeric_graph_is_checked_but_not_served(tmp_path: Path) -> None:
    """The one kind the checker passes and the runtime refuses, by design and with a reason."""
    numeric_graph(tmp_path / "model.onnx")
    found = layout.inspect(tmp_path)
    assert found.kind == "tensor" and not found.served and found.output == "y"
    report = check(tmp_path, run=True)
    assert report.kind == "tensor" and report.ok, [(i.name, i.detail) for i in report.items if not i.ok]
    assert store.describe(tmp_path).kind == "tensor"
    with pytest.raises(ModelLoadError, match="numeric graph"):
        loading.load_model(tmp_path)


def test_a_pooling_request_reads_the_token_states(tmp_path: Path) -> None:
    """A graph with both outputs: pooled by default, token states when a pooling is asked for."""
    embedding_graph(tmp_path / "model.onnx")
    tokenizer(tmp_path)
    found = layout.inspect(tmp_path)
    assert (found.output, found.token_states) == ("last_hidden_state", True)
    both = [*found.outputs, layout.ValueInfo("sentence_embedding", "float", ["batch", DIM])]
    assert layout.choose_output(both) == ("sentence_embedding", False)
    assert layout.choose_output(both, prefer_tokens=True) == ("last_hidden_state", True)


def test_a_chat_folder_is_not_an_embedding_model(tmp_path: Path) -> None:
    _genai_missing_files(tmp_path)
    decoder_graph(tmp_path / "model.onnx")
    assert layout.inspect(tmp_path).served
    with pytest.raises(OnnxgError, match="chat model"):
        loading.load_embedding(tmp_path)


@pytest.mark.parametrize("word, kind", [("chat", "chat"), ("embed", "embedding"), ("Embedding", "embedding"),
                                        ("e2e", "e2e")])
def test_kind_words(word: str, kind: str) -> None:
    assert layout.kind_named(word) == kind


def test_an_unknown_kind_word_names_the_kinds() -> None:
    with pytest.raises(OnnxgError) as caught:
        layout.kind_named("vision")
    assert "embedding" in (caught.value.hint or "")


def test_inspecting_and_checking_import_no_torch(tmp_path: Path) -> None:
    embedding_graph(tmp_path / "emb" / "model.onnx")
    tokenizer(tmp_path / "emb")
    string_graph(tmp_path / "e2e" / "model.onnx")
    code = (
        "import sys\nfrom onnxg.convert.check import check\n"
        f"assert check({str(tmp_path / 'emb')!r}, run=True).ok\n"
        f"assert check({str(tmp_path / 'e2e')!r}, run=True).ok\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
