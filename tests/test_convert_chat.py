"""``onnxg convert`` for chat models: architectures, GGUF, provenance, interruption, errors.

Every architecture model is a tiny random-weight folder (SmolLM2's real tokenizer and
template), converted once through the pipeline API and cached on disk; the CLI itself runs
as a subprocess for Llama (killed halfway, then rerun) and for the real SmolLM2 GGUF.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelkit.chat import QUESTION, TINY_LLAMA, og_generate, smollm2_gguf, tiny_hf
from modelkit.chat_families import FAMILIES, GENAI_TYPES, pipeline_build, smollm2_cli_build


def onnxg(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "onnxg.cli.main", *args], env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def run_onnxg(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxg.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def check_provenance(folder: Path, *, kind: str = "chat", precision: str = "int4") -> dict[str, Any]:
    info = json.loads((folder / "onnxg.json").read_text())
    assert info["kind"] == kind and info["precision"] == precision and info["ep"] == "cpu"
    assert info["converter"] == "onnxruntime-genai builder"
    assert info["converter_version"] and info["toolchain"]["onnxruntime-genai"] == info["converter_version"]
    assert "onnxruntime_genai.models.builder" in info["command"]
    listed = {item["path"]: item for item in info["files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "onnxg.json"}
    assert set(listed) == on_disk
    for name in ("genai_config.json", "model.onnx"):
        item = listed[name]
        data = (folder / name).read_bytes()
        assert item["size"] == len(data) and item["sha256"] == hashlib.sha256(data).hexdigest()
    return info


@pytest.mark.model
@pytest.mark.parametrize("architecture", sorted(FAMILIES))
def test_family_converts_and_generates(architecture: str) -> None:
    folder = pipeline_build(architecture)
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["type"] == GENAI_TYPES[architecture]
    info = check_provenance(folder)
    assert info["architecture"] == architecture and info["source"]["kind"] == "hf"
    assert (folder / "chat_template.jinja").is_file()
    prompt, answer, count = og_generate(folder, QUESTION, max_new_tokens=5)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert count >= 1 and isinstance(answer, str)
    # ... and through onnxg's own chat runtime, streamed and not, with the same greedy text.
    from onnxg.runtime.chat import GenaiChatModel
    from onnxg.runtime.contracts import Chunk
    from onnxg.runtime.options import GenerationOptions

    with GenaiChatModel.load(folder) as model:
        options = GenerationOptions(max_tokens=5, temperature=0)
        result = model.complete(QUESTION, options)
        streamed = "".join(c.text for c in model.stream(QUESTION, options) if isinstance(c, Chunk))
    assert result.usage.completion_tokens >= 1 and result.choices[0].finish_reason in ("stop", "length")
    assert streamed == result.choices[0].text


def _children_writing(output: Path) -> list[int]:
    """Processes whose command line mentions the partial folders of ``output`` (a worker left running)."""
    needle = str(output.parent / f".{output.name}.onnxg-partial-")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(proc.name))
    return found


def _start_and_interrupt(source: str, output: Path, logs: Path, sig: signal.Signals, *args: str) -> subprocess.Popen:
    """Start `onnxg convert SOURCE` and send ``sig`` while the builder is building."""
    proc = onnxg("convert", source, *args)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        # The worker prints the builder command once its imports are done, right before building.
        if any("$ python -m onnxruntime_genai.models.builder" in log.read_text(errors="replace")
               for log in logs.glob("convert-*.log")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert _children_writing(output), "no builder worker is running"
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    return proc


def _assert_nothing_left(output: Path) -> None:
    deadline = time.monotonic() + 5
    while _children_writing(output) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _children_writing(output), "a worker outlived onnxg"
    assert not output.exists()
    looks_like_model = [p for p in output.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert looks_like_model == []


def fake_hub_repo(home: Path, repo: str, folder: Path) -> str:
    """``folder`` laid out as a downloaded snapshot of ``repo`` in ONNXG_HOME's hub cache."""
    sha = hashlib.sha1(repo.encode()).hexdigest()
    base = home / "cache" / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(sha)
    shutil.copytree(folder, base / "snapshots" / sha, ignore=shutil.ignore_patterns(".*"))
    return sha


@pytest.mark.model
@pytest.mark.slow
def test_killed_conversion_leaves_no_model_and_rerun_succeeds(onnxg_home: Path) -> None:
    """A repo id (from the offline hub cache) converted by the CLI: SIGKILL halfway, then rerun."""
    sha = fake_hub_repo(onnxg_home, "onnxg-tests/Tiny-Llama", tiny_hf("LlamaForCausalLM", TINY_LLAMA))
    output = onnxg_home / "models" / "Tiny-Llama-int4-cpu"
    proc = _start_and_interrupt("onnxg-tests/Tiny-Llama", output, onnxg_home / "logs", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    _assert_nothing_left(output)
    assert list(output.parent.glob(".Tiny-Llama-int4-cpu.onnxg-partial-*")), "SIGKILL leaves a hidden partial"

    done = run_onnxg("convert", "onnxg-tests/Tiny-Llama", "--trust-remote-code", "--extra", "block_size=16")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(output)
    assert "✓ export + quantize" in done.stderr and "✓ check" in done.stderr
    assert [p.name for p in output.parent.iterdir() if "partial" in p.name] == []
    info = check_provenance(output)
    assert info["source"]["repo"] == "onnxg-tests/Tiny-Llama" and info["source"]["revision"] == sha
    assert info["extra"] == {"block_size": "16"} and info["trust_remote_code"] is True
    assert "block_size=16" in info["command"] and "hf_remote=true" in info["command"]
    _, _, count = og_generate(output, QUESTION, max_new_tokens=3)
    assert count >= 1


@pytest.mark.model
@pytest.mark.slow
def test_ctrl_c_exits_130_and_keeps_the_old_model(onnxg_home: Path) -> None:
    """Ctrl-C during `--force` over an existing folder: exit 130, the old folder untouched."""
    output = onnxg_home / "models" / "tiny-llama-int"
    output.mkdir(parents=True)
    (output / "old.txt").write_text("the previous model")
    source = str(tiny_hf("LlamaForCausalLM", TINY_LLAMA))
    proc = _start_and_interrupt(source, output, onnxg_home / "logs", signal.SIGINT, "-o", str(output), "--force")
    assert proc.returncode == 130
    deadline = time.monotonic() + 5
    while _children_writing(output) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _children_writing(output), "a worker outlived onnxg"
    assert [p.name for p in output.iterdir()] == ["old.txt"]
    assert [p.name for p in output.parent.iterdir()] == [output.name]


@pytest.mark.model
@pytest.mark.real
def test_smollm2_gguf_converts_with_the_cli_and_answers_paris() -> None:
    built = smollm2_cli_build()
    folder = built / "model"
    printed = json.loads((built / "stdout.json").read_text())
    assert Path(printed["output"]).name == "model" and printed["source"]["kind"] == "gguf"
    info = check_provenance(folder)
    assert info["extra"] == {"algo_config": "k_quant_last"}
    assert info["gguf"]["file"] == smollm2_gguf().name and info["architecture"] == "LlamaForCausalLM"
    _, answer, _ = og_generate(folder, QUESTION, max_new_tokens=24)
    assert "Paris" in answer, answer


# -- errors and detection (fast) --------------------------------------------------------

def test_task_detection(tmp_path: Path) -> None:
    from onnxg.convert.sources import Source, detect_task

    def folder(name: str, files: dict[str, Any]) -> Source:
        path = tmp_path / name
        path.mkdir()
        for file, content in files.items():
            (path / file).write_text(json.dumps(content))
        return Source(name, "hf", path, name)

    assert detect_task(folder("llama", {"config.json": {"architectures": ["LlamaForCausalLM"]}})) == "chat"
    bert = {"config.json": {"architectures": ["BertModel"], "model_type": "bert"}}
    assert detect_task(folder("bert", bert)) == "embedding"
    sentence_transformers = {"config.json": {"architectures": ["Qwen2ForCausalLM"]}, "modules.json": []}
    assert detect_task(folder("st", sentence_transformers)) == "embedding"
    from onnxg.runtime.errors import ConversionError

    with pytest.raises(ConversionError, match="chat or an embedding model") as caught:
        detect_task(folder("odd", {"config.json": {"model_type": "mystery"}}))
    assert "--task" in (caught.value.hint or "")


def test_bad_sources_fail_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    for source, words in (
        (str(tmp_path / "notes.txt"), "cannot convert"),
        (str(tmp_path / "empty"), "holds no model"),
        ("no-such-thing-anywhere", "not a file, a folder, a recipe"),
        ("nobody-here/no-such-model", "offline and not in the cache"),
    ):
        done = run_onnxg("convert", source, timeout=60)
        assert done.returncode == 1, (source, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr


@pytest.mark.model
def test_existing_output_is_refused_without_force(onnxg_home: Path) -> None:
    from onnxg.convert import pipeline
    from onnxg.runtime.errors import ConversionError

    output = onnxg_home / "models" / "taken"
    output.mkdir(parents=True)
    with pytest.raises(ConversionError, match="already exists") as caught:
        pipeline.convert(str(tiny_hf("LlamaForCausalLM", TINY_LLAMA)), output=output)
    assert "--force" in (caught.value.hint or "")


def test_unsupported_options_are_refused(tmp_path: Path) -> None:
    """Refused before the source is read: a config.json alone is enough of a source here."""
    source = tmp_path / "llama"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    done = run_onnxg("convert", str(source), "--int4", "--int8", timeout=60)
    assert done.returncode == 1 and "choose one precision" in done.stderr
    done = run_onnxg("convert", str(source), "--fp16", timeout=60)
    assert done.returncode == 1 and "cannot make a fp16 model for cpu" in done.stderr
    done = run_onnxg("convert", str(source), "--extra", "novalue", timeout=60)
    assert done.returncode == 1 and "KEY=VALUE" in done.stderr
    assert "Traceback" not in done.stderr


def test_list_shows_recipes() -> None:
    done = run_onnxg("convert", "--list", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    recipes = json.loads(done.stdout)
    if not recipes:
        pytest.skip("no recipes in this checkout yet")
    assert all({"name", "task", "source", "status"} <= set(r) for r in recipes)
    table = run_onnxg("convert", "--list", timeout=60)
    assert table.returncode == 0 and recipes[0]["name"] in table.stdout


def _recipes() -> list[Any]:
    from onnxg.convert import recipes

    found = recipes.load_all()
    if not found:
        pytest.skip("no recipes in this checkout yet")
    return found


def test_recipe_sources_are_refused_or_fetched() -> None:
    recipes = _recipes()
    incompatible = next((r for r in recipes if r.status != "ok"), None)
    if incompatible is not None:
        done = run_onnxg("convert", incompatible.name, timeout=60)
        assert done.returncode == 1 and "marked incompatible" in done.stderr, done.stderr
        assert incompatible.reason.split()[0] in done.stderr
    hub = next(r for r in recipes if r.status == "ok" and r.source_is_hub)
    done = run_onnxg("convert", hub.name, timeout=60)  # HF_HUB_OFFLINE=1 in the tests
    assert done.returncode == 1 and "offline and not in the cache" in done.stderr, done.stderr
    assert hub.source in done.stderr


def test_recipe_options_yield_to_the_user() -> None:
    from onnxg.convert.pipeline import recipe_options

    chat = next(r for r in _recipes() if r.task == "chat" and r.status == "ok")
    task, precision, ep, extra, _ = recipe_options(chat, None, None, "cpu", {"block_size": "64"}, False)
    assert (task, precision, ep) == ("chat", chat.precision, chat.ep)
    assert extra == {**chat.builder_options, "block_size": "64"}
    task, precision, ep, _, _ = recipe_options(chat, "chat", "int8", "cuda", None, False)
    assert (precision, ep) == ("int8", "cuda")


def test_repo_id_revision_and_subfolder_from_the_hub_cache(onnxg_home: Path, tmp_path: Path) -> None:
    from onnxg.convert.sources import resolve_source
    from onnxg.runtime.errors import ConversionError

    model = tmp_path / "model"
    (model / "int4").mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model / "int4" / "genai_config.json").write_text("{}")
    (model / "int4" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    main = fake_hub_repo(onnxg_home, "org/Some-Model", model)
    base = onnxg_home / "cache" / "hub" / "models--org--Some-Model"
    tagged = "f" * 40
    (base / "refs" / "v1").write_text(tagged)
    shutil.copytree(model, base / "snapshots" / tagged)

    src = resolve_source("org/Some-Model")
    assert (src.kind, src.repo, src.revision, src.name) == ("hf", "org/Some-Model", main, "Some-Model")
    assert src.path == base / "snapshots" / main
    src = resolve_source("org/Some-Model", revision="v1")
    assert src.revision == tagged and src.path == base / "snapshots" / tagged
    src = resolve_source("org/Some-Model/int4")
    assert src.subfolder == "int4" and src.path == base / "snapshots" / main / "int4"
    with pytest.raises(ConversionError, match="no folder 'fp16'"):
        resolve_source("org/Some-Model/fp16")
    with pytest.raises(ConversionError, match="offline and not in the cache"):
        resolve_source("org/Some-Model", revision="v2")


@pytest.mark.model
@pytest.mark.slow
def test_unsupported_architecture_fails_with_the_reason(onnxg_home: Path) -> None:
    """OPT is a causal LM the builder has no exporter for: one clear line, the log, no folder."""
    source = tiny_hf("OPTForCausalLM", {"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
                                        "num_attention_heads": 4, "word_embed_proj_dim": 64,
                                        "max_position_embeddings": 512})
    output = onnxg_home / "models" / "opt"
    done = run_onnxg("convert", str(source), "-o", str(output))
    assert done.returncode == 1
    assert "builder cannot convert this model: architecture OPTForCausalLM is not supported" in done.stderr
    logs = list((onnxg_home / "logs").glob("convert-opt-*.log"))
    assert len(logs) == 1 and str(logs[0]) in done.stderr.replace("\n", "")
    assert "Traceback" in logs[0].read_text() and "Traceback" not in done.stderr
    assert list(output.parent.iterdir()) == []
