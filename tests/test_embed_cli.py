"""`onnxg embed`: inputs (text, file, stdin), outputs (JSON Lines, .npy, .jsonl), options, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxg.runtime.embed import OnnxEmbeddingModel

LINES = ["first line", "", "  second one  ", "third: with ünïcode ✓", "   ", "4"]
NON_EMPTY = [line for line in LINES if line.strip()]


def onnxg(*args: str, stdin: str | bytes | None = None, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([sys.executable, "-m", "onnxg.cli.main", *args], input=data, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _records(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_text_argument_gives_one_json_line(tiny_embed_model: Path) -> None:
    done = onnxg("embed", "hello world", "--model", str(tiny_embed_model))
    assert done.returncode == 0, done.stderr
    [record] = _records(done.stdout)
    assert set(record) == {"index", "text", "embedding"}
    assert record["index"] == 0 and record["text"] == "hello world"
    want = OnnxEmbeddingModel.load(tiny_embed_model).embed(["hello world"]).vectors[0]
    np.testing.assert_allclose(record["embedding"], want, atol=1e-6)
    assert done.stderr == b""


def test_file_embeds_each_non_empty_line(tiny_embed_model: Path, text_file: Path) -> None:
    done = onnxg("embed", str(text_file), "-m", str(tiny_embed_model))
    assert done.returncode == 0, done.stderr
    records = _records(done.stdout)
    assert [r["index"] for r in records] == list(range(len(NON_EMPTY)))
    assert [r["text"] for r in records] == NON_EMPTY
    want = OnnxEmbeddingModel.load(tiny_embed_model).embed(NON_EMPTY).vectors
    np.testing.assert_allclose([r["embedding"] for r in records], want, atol=1e-6)


def test_stdin_by_dash_or_pipe(tiny_embed_model: Path) -> None:
    text = "alpha\n\nbeta\r\n"
    dashed = onnxg("embed", "-", "-m", str(tiny_embed_model), stdin=text)
    piped = onnxg("embed", "-m", str(tiny_embed_model), stdin=text)
    for done in (dashed, piped):
        assert done.returncode == 0, done.stderr
        assert [r["text"] for r in _records(done.stdout)] == ["alpha", "beta"]
    assert _records(dashed.stdout) == _records(piped.stdout)


def test_out_npy_and_jsonl(tiny_embed_model: Path, text_file: Path, tmp_path: Path) -> None:
    want = OnnxEmbeddingModel.load(tiny_embed_model).embed(NON_EMPTY).vectors
    npy = tmp_path / "vectors.npy"
    done = onnxg("embed", str(text_file), "-m", str(tiny_embed_model), "--out", str(npy))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert "4 inputs" in done.stderr.decode() and "32 dimensions" in done.stderr.decode()
    array = np.load(npy)
    assert array.dtype == np.float32 and array.shape == (4, 32)
    np.testing.assert_allclose(array, want, atol=1e-6)
    jsonl = tmp_path / "vectors.jsonl"
    assert onnxg("embed", str(text_file), "-m", str(tiny_embed_model), "-o", str(jsonl)).returncode == 0
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == NON_EMPTY
    np.testing.assert_allclose([r["embedding"] for r in records], want, atol=1e-6)
    assert not list(tmp_path.glob(".*partial"))


def test_options_reach_the_runtime(tiny_embed_model: Path, text_file: Path) -> None:
    base = ["embed", str(text_file), "-m", str(tiny_embed_model), "--batch-size", "1", "--threads", "1"]
    cls = _records(onnxg(*base, "--pooling", "cls").stdout)
    raw = _records(onnxg(*base, "--no-normalize").stdout)
    short = _records(onnxg(*base, "--max-length", "3").stdout)
    np.testing.assert_allclose([r["embedding"] for r in cls],
                               OnnxEmbeddingModel.load(tiny_embed_model, pooling="cls").embed(NON_EMPTY).vectors, atol=1e-6)
    norms = np.linalg.norm([r["embedding"] for r in raw], axis=1)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose([r["embedding"] for r in short],
                               OnnxEmbeddingModel.load(tiny_embed_model, max_length=3).embed(NON_EMPTY).vectors, atol=1e-6)
    multi = _records(onnxg("embed", "one two three", "-m", str(tiny_embed_model), "--pooling", "multi-vector").stdout)
    assert np.array(multi[0]["embedding"]).shape == (5, 32)  # [CLS] one two three [SEP]


def test_default_model_is_used_without_model(tiny_embed_model: Path) -> None:
    done = onnxg("embed", "hello", env={"ONNXG_DEFAULT_EMBEDDING_MODEL": str(tiny_embed_model)})
    assert done.returncode == 0, done.stderr
    assert len(_records(done.stdout)[0]["embedding"]) == 32


def test_large_input_is_streamed_in_chunks(tiny_embed_model: Path, tmp_path: Path, monkeypatch, capsysbinary) -> None:
    from onnxg.cli import embed as embed_cli
    from onnxg.cli.main import main

    texts = [f"line {i} " + "word " * (i % 9) for i in range(50)]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(texts), encoding="utf-8")
    calls: list[int] = []
    real_embed = OnnxEmbeddingModel.embed

    def counting(self, batch, **kwargs):
        calls.append(len(batch))
        return real_embed(self, batch, **kwargs)

    monkeypatch.setattr(embed_cli, "CHUNK_LINES", 16)
    monkeypatch.setattr(OnnxEmbeddingModel, "embed", counting)
    with pytest.raises(SystemExit) as exited:
        main(["embed", str(path), "-m", str(tiny_embed_model)])
    assert exited.value.code == 0
    assert calls == [16, 16, 16, 2]
    records = _records(capsysbinary.readouterr().out)
    assert [r["index"] for r in records] == list(range(50)) and [r["text"] for r in records] == texts
    np.testing.assert_allclose([r["embedding"] for r in records],
                               real_embed(OnnxEmbeddingModel.load(tiny_embed_model), texts).vectors, atol=1e-6)


@pytest.mark.parametrize(
    ("setup", "args", "needle"),
    [
        (None, ["missing.txt"], "no such file: missing.txt"),
        ("latin1", ["{file}"], "is not UTF-8 text (line 2"),
        ("empty", ["{file}"], "nothing to embed"),
        (None, ["hello", "--out", "{dir}/v.csv"], "--out must end in .npy or .jsonl"),
        (None, ["hello", "--pooling", "median"], "unknown pooling"),
        (None, ["hello", "--pooling", "multi-vector", "--out", "{dir}/v.npy"], "multi-vector"),
        (None, ["word " * 300, "--no-truncate"], "longer than the model's maximum of 128"),
        (None, ["hello", "--batch-size", "0"], "--batch-size must be at least 1"),
        ("chat", ["hello", "--model", "{dir}/chat"], "is a chat model"),
        (None, ["hello", "--model", "{dir}/nowhere"], "no model named"),
    ],
)
def test_errors_are_one_line_and_exit_1(tiny_embed_model: Path, tmp_path: Path, setup: str | None,
                                        args: list[str], needle: str) -> None:
    file = tmp_path / "input.txt"
    if setup == "latin1":
        file.write_bytes("fine\ncaf\xe9\n".encode("latin1"))
    elif setup == "empty":
        file.write_text("\n  \n\n")
    elif setup == "chat":
        (tmp_path / "chat").mkdir()
        (tmp_path / "chat" / "genai_config.json").write_text("{}")
    argv = [a.format(file=file, dir=tmp_path) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(tiny_embed_model)]
    done = onnxg("embed", *argv)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert needle in stderr
    assert "Traceback" not in stderr and done.stdout == b""
    assert stderr.splitlines()[0].startswith("Error:")
    assert not list(tmp_path.glob("v.*"))


def test_out_dir_shards_equal_the_npy_and_a_killed_run_resumes(tiny_embed_model: Path, tmp_path: Path) -> None:
    import signal
    import time

    source = tmp_path / "corpus.txt"
    source.write_text("".join(f"line {i} " + "word " * (i % 13) + "\n" for i in range(40_000)), encoding="utf-8")
    single = tmp_path / "one.npy"
    done = onnxg("embed", str(source), "-m", str(tiny_embed_model), "--out", str(single))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "parts"
    manifest = folder / "manifest.json"
    args = ["embed", str(source), "-m", str(tiny_embed_model), "--out", f"{folder}/", "--shard-rows", "4096"]
    running = subprocess.Popen([sys.executable, "-m", "onnxg.cli.main", *args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2):
            assert running.poll() is None and time.monotonic() < deadline, "no second shard before the run ended"
            time.sleep(0.02)
    finally:
        running.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
        running.communicate()
    killed = json.loads(manifest.read_text())
    assert not killed["complete"], "the run ended before the kill: use a larger input"
    resumed = sum(s["rows"] for s in killed["shards"])

    done = onnxg(*args)
    assert done.returncode == 0, done.stderr
    assert "40000 inputs" in done.stderr.decode() and f"{resumed} of them resumed" in done.stderr.decode()
    finished = json.loads(manifest.read_text())
    assert finished["complete"] and finished["count"] == 40_000 and finished["shards"][:len(killed["shards"])] == \
        killed["shards"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", *(f"part-{i:05d}.npy" for i in range(10))]
    parts = np.concatenate([np.load(folder / s["file"]) for s in finished["shards"]])
    assert parts.tobytes() == np.load(single).tobytes()


def test_out_dir_of_a_multi_vector_model_writes_jsonl_shards(tiny_embed_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "corpus.txt"
    source.write_text("".join(f"row {i} " + "token " * (i % 5) + "\n" for i in range(2100)), encoding="utf-8")
    common = ["embed", str(source), "-m", str(tiny_embed_model), "--pooling", "multi-vector", "--out"]
    assert onnxg(*common, str(tmp_path / "one.jsonl")).returncode == 0
    done = onnxg(*common, str(tmp_path / "parts"), "--shard-rows", "2048")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert manifest["multi_vector"] and [s["file"] for s in manifest["shards"]] == ["part-00000.jsonl",
                                                                                    "part-00001.jsonl"]
    joined = b"".join((tmp_path / "parts" / s["file"]).read_bytes() for s in manifest["shards"])
    assert joined == (tmp_path / "one.jsonl").read_bytes()
