"""Memory-bounded chat conversion (issue 18): layer by layer, byte-identical, under a hard limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelkit.chat import QUESTION, og_generate
from onnxg.convert import memory
from onnxg.runtime.errors import ConversionError

# RLIMIT_DATA (private writable memory: heap, anonymous maps; not the mmapped files) of the
# streamed conversion of the ~0.36B model. The plain path needs ~3 GB of it (measured below).
LIMIT = 1_800_000_000


def _graph_and_data(folder: Path) -> tuple[bytes, bytes]:
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    model.producer_version = ""  # the builder stamps the git commit of whatever repo surrounds it
    return model.SerializeToString(), (folder / "model.onnx.data").read_bytes()


def _convert(source: Path, out: Path, home: Path, limit: int | None, *extra: str) -> subprocess.CompletedProcess:
    prefix = ["prlimit", f"--data={limit}"] if limit else []
    env = {**os.environ, "ONNXG_HOME": str(home)}
    return subprocess.run([*prefix, sys.executable, "-m", "onnxg.cli.main", "convert", str(source), "-o", str(out),
                           "--json", *extra], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.model
def test_streamed_conversion_fits_a_limit_the_plain_path_does_not(tmp_path: Path) -> None:
    from modelkit.sized import llama_source
    from onnxg.convert import genai

    source = llama_source("0.4B")
    done = _convert(source, tmp_path / "streamed", tmp_path / "home", LIMIT)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout)
    assert info["build"] == {"streamed": True}

    plain = tmp_path / "plain"
    plain.mkdir()
    genai.convert(source, plain, precision="int4", ep="cpu", extra={}, trust_remote_code=False,
                  log=tmp_path / "plain.log", progress=lambda step: None, stream=False)
    assert _graph_and_data(tmp_path / "streamed") == _graph_and_data(plain)
    assert og_generate(tmp_path / "streamed", QUESTION) == og_generate(plain, QUESTION)

    # the same limit kills today's path: the limit is a real one
    limited = subprocess.run(
        ["prlimit", f"--data={LIMIT}", sys.executable, "-c",
         "import sys; from pathlib import Path; from onnxg.convert import genai; "
         "genai.convert(Path(sys.argv[1]), Path(sys.argv[2]), precision='int4', ep='cpu', extra={}, "
         "trust_remote_code=False, log=Path(sys.argv[3]), progress=print, stream=False)",
         str(source), str(tmp_path / "plain-limited"), str(tmp_path / "limited.log")],
        capture_output=True, text=True, timeout=900)
    assert limited.returncode != 0


@pytest.mark.model
def test_too_small_a_memory_budget_is_refused_before_starting(tmp_path: Path) -> None:
    from modelkit.sized import llama_source

    done = _convert(llama_source("0.4B"), tmp_path / "out", tmp_path / "home", None, "--max-memory", "600MB")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert any("needs about" in line and "--max-memory 0.6 GB" in line for line in lines), done.stderr
    assert not (tmp_path / "out").exists()


def test_sizes_parse_and_bad_ones_are_refused() -> None:
    assert memory.parse_size("12GB") == 12_000_000_000
    assert memory.parse_size("800mb") == 800_000_000
    assert memory.parse_size("16GiB") == 16 * 2**30
    with pytest.raises(ConversionError, match="cannot read the size"):
        memory.parse_size("12XB")


def test_seven_billion_parameters_fit_sixteen_gigabytes_only_layer_by_layer() -> None:
    # Llama-2-7B's shape (calm2-7b has the same layers and a 65k vocabulary)
    config = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "vocab_size": 65024}
    params, unit = memory.count_params(config)
    assert 6.9e9 < params < 7.1e9
    streamed = memory.estimate(params, unit, "int4", streamed=True)
    plain = memory.estimate(params, unit, "int4", streamed=False)
    memory.check_memory(streamed, 12_000_000_000, "calm2-7b")
    with pytest.raises(ConversionError, match="needs about") as refused:
        memory.check_memory(plain, 16_000_000_000, "calm2-7b")
    assert "layer by layer" in (refused.value.hint or "")


def test_cli_refuses_a_bad_max_memory_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    done = subprocess.run([sys.executable, "-m", "onnxg.cli.main", "convert", str(tmp_path), "--max-memory", "lots"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ONNXG_HOME": str(tmp_path / "home")})
    assert done.returncode != 0
    assert "--max-memory: cannot read the size 'lots'" in done.stderr
    assert "Traceback" not in done.stderr
