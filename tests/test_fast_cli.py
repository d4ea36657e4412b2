"""`onnxg chat` and `onnxg embed` on fake models (the fast tier): what the commands do around a
model — options, input and output formats, errors through the one boundary — in-process, with
the loaders handing back fakes. test_chat_cli.py and test_embed_cli.py run them on real models."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import SCRIPT, FakeChatModel, FakeEmbeddingModel, words

from onnxg.cli.main import main
from onnxg.convert import defaults
from onnxg.runtime import loading


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The loaders give fakes; every model reference resolves to a folder named after it."""
    made: dict[str, Any] = {"chat": FakeChatModel(), "embed": FakeEmbeddingModel(), "loads": []}

    def resolve(ref: str, progress: Any = None) -> Path:
        return tmp_path / str(ref).replace("/", "_")

    def load_chat(ref: Path, **options: Any) -> FakeChatModel:
        made["loads"].append(("chat", Path(ref).name, options))
        return made["chat"]

    def load_embedding(ref: Path, **options: Any) -> FakeEmbeddingModel:
        made["loads"].append(("embedding", Path(ref).name, options))
        model = made["embed"]
        model.truncate = options.get("truncate", True)
        return model

    monkeypatch.setattr(defaults, "resolve", resolve)
    monkeypatch.setattr(defaults, "default_model", lambda kind, progress=None: tmp_path / f"default-{kind}")
    monkeypatch.setattr(loading, "load_chat", load_chat)
    monkeypatch.setattr(loading, "load_embedding", load_embedding)
    return made


def run(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        stdin: str | None = None) -> tuple[int, str, str]:
    piped = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8") if stdin is not None else _Terminal()
    monkeypatch.setattr(sys, "stdin", piped)
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------- onnxg chat


def test_chat_streams_the_reply(fakes: dict, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    code, out, err = run(["chat", "-m", "my-chat", "--temperature", "0", "--verbose", "Hello"], capsys, monkeypatch)
    assert code == 0, err
    assert out == SCRIPT + "\n"
    assert "tokens/s" in err and "time to first token" in err
    assert fakes["loads"] == [("chat", "my-chat", {"chat_template": None, "threads": None})]
    assert fakes["chat"].closed


def test_chat_json_is_one_chat_completion(fakes: dict, capsys, monkeypatch) -> None:
    code, out, err = run(["chat", "--json", "--max-tokens", "3", "--temperature", "0", "--system", "Be brief.", "Hi"],
                         capsys, monkeypatch)
    assert code == 0, err
    body = json.loads(out)
    assert body["object"] == "chat.completion" and body["model"] == "fake-chat"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "".join(words(SCRIPT)[:3])}
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert fakes["loads"][0][1] == "default-chat"  # no --model: the default chat model


def test_chat_seed_and_stop(fakes: dict, capsys, monkeypatch) -> None:
    first = run(["chat", "--json", "--seed", "4", "--temperature", "1", "Hi"], capsys, monkeypatch)[1]
    again = run(["chat", "--json", "--seed", "4", "--temperature", "1", "Hi"], capsys, monkeypatch)[1]
    assert json.loads(first)["choices"] == json.loads(again)["choices"]
    code, out, _ = run(["chat", "--temperature", "0", "--stop", "fake", "Hi"], capsys, monkeypatch)
    assert code == 0 and out == SCRIPT[:SCRIPT.index("fake")] + "\n"


def test_chat_prompt_from_stdin(fakes: dict, capsys, monkeypatch) -> None:
    code, out, _ = run(["chat", "--temperature", "0"], capsys, monkeypatch, stdin="What is it?\n")
    assert code == 0 and out == SCRIPT + "\n"
    code, _, err = run(["chat"], capsys, monkeypatch, stdin="   \n")
    assert code == 1 and "the prompt from stdin is empty" in err


def test_chat_interactive_session(fakes: dict, capsys, monkeypatch) -> None:
    answers = iter(["Hello", "", "/reset", "RAISE:ContextLengthExceeded", "Again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code, out, err = run(["chat", "--temperature", "0"], capsys, monkeypatch)
    assert code == 0, err
    assert out.count(SCRIPT) == 2  # "Hello" and "Again"; the failing turn said why and went on
    assert "history cleared" in err and "Error:" in err and "raised on request" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "5", "Hi"], "temperature must be between 0 and 2"),
    (["--top-p", "1.5", "Hi"], "top_p must be between 0 and 1"),
    (["--max-tokens", "0", "Hi"], "max_tokens must be"),
    (["--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e", "Hi"], "stop"),
    (["--chat-template", "/no/such/file.jinja", "Hi"], "chat template file not found"),
    (["--json"], "--json needs a prompt"),
])
def test_chat_bad_options_are_one_line_errors(fakes: dict, capsys, monkeypatch, args: list[str],
                                              message: str) -> None:
    code, out, err = run(["chat", *args], capsys, monkeypatch)
    assert code == 1 and out == ""
    assert err.startswith("Error:") and message in err and "Traceback" not in err
    assert fakes["chat"].started == 0


def test_chat_context_too_long_is_one_line(fakes: dict, capsys, monkeypatch) -> None:
    fakes["chat"].context_length = 4
    code, out, err = run(["chat", "one two three four five six"], capsys, monkeypatch)
    assert code == 1 and err.startswith("Error:") and "maximum context length is 4 tokens" in err


# ---------------------------------------------------------------- onnxg embed

LINES = ["first line", "", "  second one  ", "third: ünïcode ✓", "   ", "4"]
NON_EMPTY = [line for line in LINES if line.strip()]


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_embed_text_gives_one_json_line(fakes: dict, capsys, monkeypatch) -> None:
    code, out, err = run(["embed", "hello world", "-m", "e"], capsys, monkeypatch)
    assert code == 0 and err == ""
    [record] = _records(out)
    assert record["index"] == 0 and record["text"] == "hello world"
    assert np.allclose(record["embedding"], fakes["embed"].vector(["hello", "world"]), atol=1e-7)


def test_embed_file_and_stdin_skip_empty_lines(fakes: dict, capsys, monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    code, out, _ = run(["embed", str(path)], capsys, monkeypatch)
    assert code == 0 and [r["text"] for r in _records(out)] == NON_EMPTY
    assert [r["index"] for r in _records(out)] == list(range(len(NON_EMPTY)))
    code, piped, _ = run(["embed", "-"], capsys, monkeypatch, stdin="\n".join(LINES))
    assert code == 0 and _records(piped) == _records(out)


def test_embed_out_npy_and_jsonl(fakes: dict, capsys, monkeypatch, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(NON_EMPTY), encoding="utf-8")
    want = fakes["embed"].embed(NON_EMPTY).vectors
    code, out, err = run(["embed", str(source), "--out", str(tmp_path / "v.npy")], capsys, monkeypatch)
    assert code == 0 and out == "" and "4 inputs" in err and "8 dimensions" in err
    array = np.load(tmp_path / "v.npy")
    assert array.dtype == np.float32 and np.array_equal(array, want)
    code, _, _ = run(["embed", str(source), "-o", str(tmp_path / "v.jsonl")], capsys, monkeypatch)
    records = _records((tmp_path / "v.jsonl").read_text(encoding="utf-8"))
    assert code == 0 and np.allclose([r["embedding"] for r in records], want, atol=1e-7)
    assert not list(tmp_path.glob(".*partial"))


def test_embed_options_reach_the_loader(fakes: dict, capsys, monkeypatch) -> None:
    run(["embed", "x", "--pooling", "cls", "--no-normalize", "--max-length", "9", "--threads", "1", "--no-truncate"],
        capsys, monkeypatch)
    assert fakes["loads"] == [("embedding", "default-embedding", {
        "threads": 1, "pooling": "cls", "normalize": False, "max_length": 9, "truncate": False})]


@pytest.mark.parametrize(("setup", "args", "needle"), [
    (None, ["missing.txt"], "no such file: missing.txt"),
    ("latin1", ["{file}"], "is not UTF-8 text (line 2"),
    ("empty", ["{file}"], "nothing to embed"),
    (None, ["hello", "--out", "{dir}/v.csv"], "--out must end in .npy or .jsonl"),
    (None, ["hello", "--out", "{dir}/v.npy", "--shard-rows", "4096"], "--shard-rows needs --out DIR"),
    (None, ["hello", "--out", "{dir}/vectors/", "--shard-rows", "1000"], "--shard-rows must be a multiple of 2048"),
    ("other", ["hello", "--out", "{dir}/taken"], "is a folder holding other files"),
    (None, ["hello", "--batch-size", "0"], "--batch-size must be at least 1"),
    (None, ["word " * 40, "--no-truncate"], "longer than the model's maximum of 32"),
])
def test_embed_errors_are_one_line_and_write_nothing(fakes: dict, capsys, monkeypatch, tmp_path: Path,
                                                     setup: str | None, args: list[str], needle: str) -> None:
    file = tmp_path / "input.txt"
    if setup == "latin1":
        file.write_bytes("fine\ncaf\xe9\n".encode("latin1"))
    elif setup == "empty":
        file.write_text("\n  \n\n")
    elif setup == "other":
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["embed", *[a.format(file=file, dir=tmp_path) for a in args]], capsys, monkeypatch)
    assert code == 1 and out == ""
    assert err.splitlines()[0].startswith("Error:") and needle in err and "Traceback" not in err
    assert not list(tmp_path.glob("v.*"))
    assert not (tmp_path / "vectors").exists()


# ---------------------------------------------------------------- onnxg embed --out DIR

CORPUS = [f"line {i} " + "word " * (i % 5) for i in range(11)]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxg.cli import embed as embed_cmd

    monkeypatch.setattr(embed_cmd, "CHUNK_LINES", 2)  # 11 lines: 6 chunks, shards of 2 chunks


def _shards(folder: Path) -> np.ndarray:
    manifest = json.loads((folder / "manifest.json").read_text())
    return np.concatenate([np.load(folder / s["file"]) for s in manifest["shards"]])


def test_embed_out_dir_writes_shards_that_concatenate_to_the_npy(fakes: dict, capsys, monkeypatch, tmp_path: Path,
                                                                 small_chunks: None) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    code, _, err = run(["embed", str(source), "-m", "e", "--out", str(tmp_path / "one.npy")], capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run(["embed", str(source), "-m", "e", "--out", str(tmp_path / "parts"), "--shard-rows", "4"],
                         capsys, monkeypatch)
    assert code == 0 and out == "" and "11 inputs" in err, err
    folder = tmp_path / "parts"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part-00000.npy", "part-00001.npy",
                                                        "part-00002.npy"]
    single = np.load(tmp_path / "one.npy")
    assert _shards(folder).tobytes() == single.tobytes() and single.shape == (11, 8)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 11 and manifest["dimensions"] == 8
    assert [(s["first"], s["rows"]) for s in manifest["shards"]] == [(0, 4), (4, 4), (8, 3)]
    assert manifest["input"] == {"name": str(source.resolve()), "size": source.stat().st_size}
    assert manifest["model"]["name"] == "e" and manifest["shard_rows"] == 4

    fakes["embed"].calls = 0  # a rerun finds the folder complete and embeds nothing
    code, _, err = run(["embed", str(source), "-m", "e", "--out", str(folder), "--shard-rows", "4"], capsys, monkeypatch)
    assert code == 0 and "11 inputs already in" in err and fakes["embed"].calls == 0


def test_embed_out_dir_resumes_after_an_interruption(fakes: dict, capsys, monkeypatch, tmp_path: Path,
                                                     small_chunks: None) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(CORPUS), encoding="utf-8")
    model = fakes["embed"]
    embedded: list[str] = []
    real_embed = model.embed

    def interrupted(texts: list[str], **kw: Any) -> Any:
        if len(embedded) == 6:  # the fourth chunk: one shard of 4 rows is complete, the second half-written
            raise KeyboardInterrupt
        embedded.extend(texts)
        return real_embed(texts, **kw)

    monkeypatch.setattr(model, "embed", interrupted)
    args = ["embed", str(source), "-m", "e", "--out", str(tmp_path / "parts"), "--shard-rows", "4"]
    code, _, err = run(args, capsys, monkeypatch)
    assert code == 130, err
    folder = tmp_path / "parts"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert not manifest["complete"] and [s["rows"] for s in manifest["shards"]] == [4]
    assert not list(folder.glob(".*")), "the interrupted shard's partial file was left behind"

    embedded.clear()
    monkeypatch.setattr(model, "embed", lambda texts, **kw: (embedded.extend(texts), real_embed(texts, **kw))[1])
    code, _, err = run(args, capsys, monkeypatch)
    assert code == 0 and "11 inputs" in err and "4 of them resumed" in err, err
    assert embedded == CORPUS[4:]  # the complete shard's lines are not embedded again
    assert _shards(folder).tobytes() == real_embed(CORPUS).vectors.tobytes()


@pytest.mark.parametrize(("change", "needle"), [
    (["--pooling", "cls"], "holds vectors of another options (pooling: None there, 'cls' now)"),
    (["-m", "other"], "holds vectors of another model"),
    (["--shard-rows", "8"], "holds vectors of another shard rows"),
    ("edit", "holds vectors of another input"),
    ("same-size", "holds vectors of other lines than the input's (part-00000.npy)"),
    ("batching", "holds vectors of another batching ('an older rule' there, "),
])
def test_embed_out_dir_refuses_a_folder_of_other_vectors(fakes: dict, capsys, monkeypatch, tmp_path: Path,
                                                          small_chunks: None, change: Any, needle: str) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(CORPUS), encoding="utf-8")
    args = ["embed", str(source), "-m", "e", "--out", str(tmp_path / "parts"), "--shard-rows", "4"]
    assert run(args, capsys, monkeypatch)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "parts").iterdir()}
    if change == "edit":
        source.write_text("\n".join(CORPUS[:5]), encoding="utf-8")
    elif change == "same-size":
        source.write_text("\n".join(["LINE" + c[4:] for c in CORPUS]), encoding="utf-8")
    elif change == "batching":  # a folder an onnxg that cut calls differently began
        from onnxg.runtime import embed as embed_module

        rule = embed_module.BATCHING
        monkeypatch.setattr(embed_module, "BATCHING", "an older rule")
        assert run(["embed", str(source), "-m", "e", "--out", str(tmp_path / "older"), "--shard-rows", "4"],
                   capsys, monkeypatch)[0] == 0
        monkeypatch.setattr(embed_module, "BATCHING", rule)
        args[args.index(str(tmp_path / "parts"))] = str(tmp_path / "older")
        before = {p.name: p.read_bytes() for p in (tmp_path / "older").iterdir()}
    else:
        args = [*args, *change] if "--shard-rows" not in change else [*args[:-2], *change]
    code, out, err = run(args, capsys, monkeypatch)
    assert code == 1 and out == "" and err.startswith("Error:") and needle in err, err
    assert {p.name: p.read_bytes() for p in Path(args[args.index("--out") + 1]).iterdir()} == before  # nothing overwritten


def test_embed_out_dir_names_what_an_older_manifest_did_not_record() -> None:
    """A folder begun before onnxg recorded how it cuts model calls says so in words."""
    from onnxg.cli.embed_out import _differs

    assert _differs(None, "rule") == "not recorded there, 'rule' now"
    assert _differs("old", "rule") == "'old' there, 'rule' now"
