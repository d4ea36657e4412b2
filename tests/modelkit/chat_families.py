"""Tiny models of each chat architecture family, converted by ``onnxg convert`` (cached).

Kept apart from the tests so that editing a test does not change the cache key (which
covers this module's source) and rebuild every conversion.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelkit import cache
from modelkit.chat import TINY_LLAMA, smollm2_gguf, tiny_hf

BASE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 2048}
FAMILIES: dict[str, dict[str, Any]] = {
    "LlamaForCausalLM": TINY_LLAMA,
    "MistralForCausalLM": {**BASE, "num_key_value_heads": 2, "sliding_window": 1024},
    "Phi3ForCausalLM": {**BASE, "num_key_value_heads": 4, "original_max_position_embeddings": 2048},
    # Gemma 2's window is kept small: onnxruntime-genai 0.18 refuses to generate when the KV
    # cache (max_length) is smaller than the sliding window, and the tests generate short.
    "Gemma2ForCausalLM": {**BASE, "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16,
                          "sliding_window": 16},
    "Qwen2ForCausalLM": {**BASE, "num_key_value_heads": 2},
    "Qwen3ForCausalLM": {**BASE, "num_key_value_heads": 2, "head_dim": 16},
    "GraniteForCausalLM": {**BASE, "num_key_value_heads": 2},
}
# The conversions are keyed by the converter's own source too: a change to what it writes
# (provenance included) rebuilds them instead of testing stale outputs.
_CONVERT = Path(__file__).resolve().parents[2] / "convert"
CONVERTER = hashlib.sha256(b"".join(
    p.read_bytes() for p in (_CONVERT / "pipeline.py", _CONVERT / "genai.py", _CONVERT / "workers" / "genai_build.py",
                             _CONVERT / "workers" / "genai_gguf.py"))).hexdigest()[:12]
GENAI_TYPES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Phi3ForCausalLM": "phi3",
    "Gemma2ForCausalLM": "gemma2", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
    "GraniteForCausalLM": "granite",
}


def pipeline_build(architecture: str) -> Path:
    """The tiny ``architecture`` model converted by ``pipeline.convert`` (cached)."""
    from onnxg.convert import pipeline

    source = tiny_hf(architecture, FAMILIES[architecture])

    def build(folder: Path) -> None:
        pipeline.convert(str(source), output=folder / "model", log=folder / "convert.log")

    return cache.cached(f"convert-{architecture}", {"source": source.name, "converter": CONVERTER}, build) / "model"


def smollm2_cli_build() -> Path:
    """`onnxg convert SmolLM2.gguf` through the real CLI (cached: it takes a minute or two)."""
    gguf = smollm2_gguf()

    def build(folder: Path) -> None:
        env = {**os.environ, "ONNXG_HOME": str(folder / "home")}
        done = subprocess.run(
            [sys.executable, "-m", "onnxg.cli.main", "convert", str(gguf), "-o", str(folder / "model"),
             "--extra", "algo_config=k_quant_last", "--json"],
            capture_output=True, text=True, env=env, timeout=900,
        )
        assert done.returncode == 0, done.stderr
        (folder / "stdout.json").write_text(done.stdout)

    return cache.cached("convert-cli-smollm2", {"gguf": gguf.name, "extra": "k_quant_last", "converter": CONVERTER},
                        build)
