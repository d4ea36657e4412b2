"""The chat test models load and generate with plain onnxruntime_genai (no onnxg runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelkit.chat import QUESTION, og_generate


def test_tiny_chat_model_generates(tiny_chat_model: Path) -> None:
    config = json.loads((tiny_chat_model / "genai_config.json").read_text())
    assert config["model"]["type"] == "llama"
    assert config["model"]["vocab_size"] == 49152
    assert any(p.suffix == ".onnx" for p in tiny_chat_model.iterdir())
    prompt, answer, count = og_generate(tiny_chat_model, QUESTION, max_new_tokens=8)
    # The real SmolLM2 template (ChatML) rendered by onnxruntime-genai itself.
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    assert "What is the capital of France?" in prompt
    assert count >= 1 and isinstance(answer, str)


def test_tiny_chat_model_is_reproducible(tiny_chat_model: Path) -> None:
    """Random weights, fixed seed: greedy output is the same on every load."""
    first = og_generate(tiny_chat_model, QUESTION, max_new_tokens=6)
    second = og_generate(tiny_chat_model, QUESTION, max_new_tokens=6)
    assert first == second


@pytest.mark.real
def test_smollm2_answers_paris(smollm2_model: Path) -> None:
    config = json.loads((smollm2_model / "genai_config.json").read_text())
    assert config["model"]["type"] == "llama"
    _, answer, _ = og_generate(smollm2_model, QUESTION, max_new_tokens=24)
    assert "Paris" in answer, answer
