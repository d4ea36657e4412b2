"""`onnxg check`: passes on converted models, fails with the right hint on broken copies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onnxg.convert.check import Report, check
from onnxg.runtime import layout

def copy_model(source: Path, target: Path, *, copy: tuple[str, ...] = ()) -> Path:
    """A private copy of a cached model: weights (``*.data``) symlinked unless in ``copy``.

    Tests only ever unlink a symlinked file, never write through it: the cache stays intact.
    """
    target.mkdir(parents=True)
    for item in source.rglob("*"):
        if item.name.startswith(".built") or item.is_dir():
            continue
        dest = target / item.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if item.name.endswith(".data") and item.name not in copy:
            os.symlink(item.resolve(), dest)
        else:
            shutil.copy2(item, dest)
    return target


def item(report: Report, name: str):
    found = [i for i in report.items if i.name == name]
    assert found, f"no check named {name!r} in {[i.name for i in report.items]}"
    return found[0]


def failed(report: Report) -> dict[str, tuple[str, str | None]]:
    return {i.name: (i.detail, i.hint) for i in report.items if not i.ok}


# ---------------------------------------------------------------------------- chat
@pytest.fixture
def chat_copy(tiny_chat_model: Path, tmp_path: Path) -> Path:
    return copy_model(tiny_chat_model, tmp_path / "chat")


def test_converted_chat_model_passes(tiny_chat_model: Path) -> None:
    report = check(tiny_chat_model, run=True)
    assert report.kind == "chat"
    assert report.ok, failed(report)
    names = [i.name for i in report.items]
    for expected in ("genai_config.json", "model type", "model files", "weights", "operators", "tokenizer files",
                     "tokenizer", "chat template", "context length", "special tokens", "generate"):
        assert expected in names
    assert "faithful" in item(report, "tokenizer").detail
    data = report.to_json()
    assert data["ok"] is True and data["kind"] == "chat" and len(data["checks"]) == len(report.items)
    json.dumps(data)


def test_missing_genai_config(chat_copy: Path) -> None:
    (chat_copy / "genai_config.json").unlink()
    report = check(chat_copy)
    assert report.kind == "chat"  # still recognised by its decoder's past_key_values inputs
    assert not report.ok
    detail, hint = failed(report)["genai_config.json"]
    assert "missing" in detail and "model.onnx" in detail
    assert hint and "onnxg convert" in hint


def test_invalid_genai_config(chat_copy: Path) -> None:
    (chat_copy / "genai_config.json").write_text("{ not json")
    detail, hint = failed(check(chat_copy))["genai_config.json"]
    assert "not valid JSON" in detail and hint


def test_missing_external_data(chat_copy: Path) -> None:
    (chat_copy / "model.onnx.data").unlink()
    report = check(chat_copy)
    detail, hint = failed(report)["weights"]
    assert "model.onnx.data" in detail and "missing" in detail
    assert hint and "weights file" in hint


def test_truncated_external_data(tiny_chat_model: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_chat_model, tmp_path / "chat", copy=("model.onnx.data",))
    data = folder / "model.onnx.data"
    size = data.stat().st_size
    with open(data, "r+b") as handle:
        handle.truncate(size // 2)
    detail, _ = failed(check(folder))["weights"]
    assert "truncated" in detail and str(size // 2) in detail


def test_missing_decoder_file(chat_copy: Path) -> None:
    (chat_copy / "model.onnx").unlink()
    detail, hint = failed(check(chat_copy))["model files"]
    assert "missing model.onnx" in detail and hint


def test_missing_tokenizer(chat_copy: Path) -> None:
    (chat_copy / "tokenizer.json").unlink()
    detail, hint = failed(check(chat_copy))["tokenizer files"]
    assert "tokenizer.json" in detail and hint and "tokenizer files" in hint


def test_unsupported_model_type(chat_copy: Path) -> None:
    config = json.loads((chat_copy / "genai_config.json").read_text())
    config["model"]["type"] = "nosuchmodel"
    (chat_copy / "genai_config.json").write_text(json.dumps(config))
    detail, hint = failed(check(chat_copy))["model type"]
    assert "'nosuchmodel' is not supported by onnxruntime-genai" in detail
    assert hint and "upgrade onnxruntime-genai" in hint


def test_config_key_unknown_to_this_runtime(chat_copy: Path) -> None:
    config = json.loads((chat_copy / "genai_config.json").read_text())
    config["model"]["bogus_key"] = 1
    (chat_copy / "genai_config.json").write_text(json.dumps(config))
    detail, hint = failed(check(chat_copy))["model type"]
    assert "rejects genai_config.json" in detail and "bogus_key" in detail and hint


def _set_template(folder: Path, template: str) -> None:
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    for name in ("chat_template.json",):
        (folder / name).unlink(missing_ok=True)
    (folder / "chat_template.jinja").write_text(template)


def test_bad_template(chat_copy: Path) -> None:
    _set_template(chat_copy, "{% for message in messages %}{{ message['content'] }")
    detail, hint = failed(check(chat_copy))["chat template"]
    assert hint and "--chat-template" in hint


def test_template_that_raises(chat_copy: Path) -> None:
    _set_template(chat_copy, "{{ raise_exception('this template is broken') }}")
    detail, hint = failed(check(chat_copy))["chat template"]
    assert "this template is broken" in detail and hint


def test_template_rejecting_system_messages_passes_with_a_hint(chat_copy: Path) -> None:
    _set_template(chat_copy, (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    ))
    report = check(chat_copy)
    template = item(report, "chat template")
    assert template.ok and "rejects system messages" in template.detail and template.hint


def test_missing_template(chat_copy: Path) -> None:
    _set_template(chat_copy, "")
    (chat_copy / "chat_template.jinja").unlink()
    detail, hint = failed(check(chat_copy))["chat template"]
    assert "no chat template" in detail and hint and "chat_template.jinja" in hint


def test_mangled_tokenizer_decoder(chat_copy: Path) -> None:
    """The decoder transformers 4.57 writes for SmolLM2's byte-level BPE (measured from its GGUF):
    onnxruntime-genai then encodes spaces and newlines to id -1 and loses them."""
    path = chat_copy / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    ]}
    path.unlink()  # never write through a link into the cache
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    detail, hint = failed(check(chat_copy))["tokenizer"]
    assert "mangles spaces and newlines" in detail and "invalid" in detail
    assert hint and "transformers 5" in hint and "ByteFallback" in hint


def test_max_length_beyond_context(chat_copy: Path) -> None:
    config = json.loads((chat_copy / "genai_config.json").read_text())
    context = config["model"]["context_length"]
    config["search"]["max_length"] = context * 2
    (chat_copy / "genai_config.json").write_text(json.dumps(config))
    detail, hint = failed(check(chat_copy))["context length"]
    assert f"does not fit context_length {context}" in detail and hint and str(context) in hint


def test_max_length_below_sliding_window(chat_copy: Path) -> None:
    config = json.loads((chat_copy / "genai_config.json").read_text())
    config["model"]["decoder"]["sliding_window"] = {"window_size": 4096, "slide_key_value_cache": False}
    (chat_copy / "genai_config.json").write_text(json.dumps(config))
    detail, hint = failed(check(chat_copy))["context length"]
    assert "sliding window (4096 tokens)" in detail and hint and "4096" in hint


def test_eos_outside_vocabulary(chat_copy: Path) -> None:
    config = json.loads((chat_copy / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = config["model"]["vocab_size"] + 5
    (chat_copy / "genai_config.json").write_text(json.dumps(config))
    detail, hint = failed(check(chat_copy))["special tokens"]
    assert "eos_token_id" in detail and "outside the vocabulary" in detail and hint


def test_cpu_gqa_head_size(chat_copy: Path) -> None:
    """The static form of h2o-danube3's failure (head_size 120 on CPU GroupQueryAttention)."""
    config = json.loads((chat_copy / "genai_config.json").read_text())
    config["model"]["decoder"]["head_size"] = 120
    (chat_copy / "genai_config.json").write_text(json.dumps(config))
    detail, hint = failed(check(chat_copy))["attention"]
    assert "head_size 120" in detail and "multiple of 16" in detail and hint


# ---------------------------------------------------------------------------- embeddings
@pytest.fixture
def embed_copy(tiny_embed_model: Path, tmp_path: Path) -> Path:
    return copy_model(tiny_embed_model, tmp_path / "embed")


def test_converted_embedding_model_passes(tiny_embed_model: Path) -> None:
    report = check(tiny_embed_model, run=True)
    assert report.kind == "embedding"
    assert report.ok, failed(report)
    for expected in ("model file", "weights", "inputs", "outputs", "tokenizer", "pooling", "operators", "load", "embed"):
        assert item(report, expected).ok
    assert "input_ids" in item(report, "inputs").detail
    assert "mean" in item(report, "pooling").detail


def test_embedding_missing_tokenizer(embed_copy: Path) -> None:
    for name in ("tokenizer.json", "tokenizer.model", "vocab.txt"):
        (embed_copy / name).unlink(missing_ok=True)
    detail, hint = failed(check(embed_copy))["tokenizer"]
    assert "no tokenizer.json" in detail and hint and "tokenizer.model" in hint


def test_embedding_broken_pooling(embed_copy: Path) -> None:
    pooling = embed_copy / "1_Pooling" / "config.json"
    if not pooling.is_file():
        pytest.skip("fixture has no sentence-transformers pooling metadata")
    data = json.loads(pooling.read_text())
    for key in data:
        if key.startswith("pooling_mode_"):
            data[key] = True
    pooling.write_text(json.dumps(data))
    detail, hint = failed(check(embed_copy))["pooling"]
    assert "pooling modes" in detail and hint


def test_embedding_pooling_only_config_agrees_with_runtime(embed_copy: Path) -> None:
    """A lone 1_Pooling/config.json with the newer ``pooling_mode`` key: check and runtime both say cls."""
    from onnxg.runtime.embed import OnnxEmbeddingModel

    (embed_copy / "modules.json").unlink(missing_ok=True)
    (embed_copy / "1_Pooling").mkdir(exist_ok=True)
    (embed_copy / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))
    report = check(embed_copy)
    assert item(report, "pooling").ok
    assert item(report, "pooling").detail.startswith("cls")
    assert OnnxEmbeddingModel.load(embed_copy, threads=1).pooling == "cls"


def test_embedding_onnxg_json_pooling_is_not_what_runtime_reads(embed_copy: Path) -> None:
    """onnxg.json's ``pooling`` is not pooling metadata for the runtime: check reports what it will use."""
    from onnxg.runtime.embed import OnnxEmbeddingModel

    meta = embed_copy / "onnxg.json"
    data = json.loads(meta.read_text()) if meta.is_file() else {}
    meta.write_text(json.dumps({**data, "pooling": "cls"}))
    runtime = OnnxEmbeddingModel.load(embed_copy, threads=1).pooling
    assert item(check(embed_copy), "pooling").detail.startswith(runtime)


def test_embedding_missing_model(embed_copy: Path) -> None:
    for path in embed_copy.glob("*.onnx"):
        path.unlink()
    report = check(embed_copy)
    assert report.kind == "unknown" and not report.ok
    detail, hint = failed(report)["model files"]
    assert hint and "onnxg convert" in hint


# ---------------------------------------------------------------------------- end-to-end
def _string_model(path: Path, *, custom_domain: str | None = None) -> None:
    """A tiny string-input model: texts -> LabelEncoder -> float [n, 1] (standard ONNX-ML ops)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("LabelEncoder", ["text"], ["score"], domain="ai.onnx.ml",
                         keys_strings=["hello", "world"], values_floats=[1.0, 2.0], default_float=0.5),
        helper.make_node("Unsqueeze", ["score", "axes"], ["embedding"]),
    ]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    if custom_domain:
        nodes.append(helper.make_node("Mystery", ["embedding"], ["mystery"], domain=custom_domain))
        opsets.append(helper.make_opsetid(custom_domain, 1))
    graph = helper.make_graph(
        nodes, "e2e",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=9), str(path))


def test_e2e_model(tmp_path: Path) -> None:
    folder = tmp_path / "e2e"
    folder.mkdir()
    _string_model(folder / "model.onnx")
    assert layout.inspect(folder).kind == "e2e"
    report = check(folder, run=True)
    assert report.kind == "e2e" and report.ok, failed(report)
    assert "text:string" in item(report, "inputs").detail
    assert "shape [1, 1]" in item(report, "embed").detail


def test_e2e_unknown_custom_ops(tmp_path: Path) -> None:
    folder = tmp_path / "e2e"
    folder.mkdir()
    _string_model(folder / "model.onnx", custom_domain="com.example.mystery")
    detail, hint = failed(check(folder))["operators"]
    assert "com.example.mystery" in detail and hint


def test_numeric_tensorflow_model(tmp_path: Path) -> None:
    """A converted dense TF model (float inputs, model_io.json): loads and runs, reported as "tensor"."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.5] * 12)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(tmp_path / "model.onnx"))
    (tmp_path / "model_io.json").write_text(json.dumps({"embedding_output": "y", "text_input": None}))
    report = check(tmp_path, run=True)
    assert report.kind == "tensor" and report.ok, failed(report)
    assert "shape [1, 3]" in item(report, "run").detail
    (tmp_path / "model_io.json").write_text(json.dumps({"embedding_output": "nope"}))
    detail, hint = failed(check(tmp_path))["outputs"]
    assert hint and "'nope'" in hint


def test_provenance_sizes(chat_copy: Path) -> None:
    files = {p.name: {"size": p.stat().st_size} for p in chat_copy.iterdir() if p.is_file()}
    (chat_copy / "onnxg.json").write_text(json.dumps({"source": "test", "files": files}))
    assert item(check(chat_copy), "provenance").ok
    files["genai_config.json"]["size"] += 1
    (chat_copy / "onnxg.json").write_text(json.dumps({"source": "test", "files": files}))
    detail, hint = failed(check(chat_copy))["provenance"]
    assert "genai_config.json" in detail and hint


def test_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    report = check(tmp_path)
    assert report.kind == "unknown" and not report.ok
    assert not check(tmp_path / "nope").ok


def test_garbage_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\xff\xfe not a protobuf" * 10)
    report = check(tmp_path)
    assert not report.ok


# ---------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnxg.cli.main", "check", *args], capture_output=True, text=True)


def test_cli_pass_and_fail(tiny_chat_model: Path, chat_copy: Path) -> None:
    done = _cli(str(tiny_chat_model))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ genai_config.json" in done.stdout and "ready to serve" in done.stdout

    (chat_copy / "model.onnx.data").unlink()
    done = _cli(str(chat_copy))
    assert done.returncode == 1
    assert "✗ weights" in done.stdout and "hint:" in done.stdout and "Traceback" not in done.stderr

    done = _cli(str(chat_copy), "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["ok"] is False and data["kind"] == "chat"
    assert any(c["name"] == "weights" and not c["ok"] and c["hint"] for c in data["checks"])


def test_cli_unknown_folder(tmp_path: Path) -> None:
    done = _cli(str(tmp_path / "missing"))
    assert done.returncode == 1
    assert "Error" in done.stderr and "Traceback" not in done.stderr
