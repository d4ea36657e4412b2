"""The chat runtime and `onnxg chat` on the real SmolLM2-135M-Instruct int4."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from onnxg.runtime.chat import GenaiChatModel

from onnxg.runtime.contracts import Message, Usage

from onnxg.runtime.options import GenerationOptions

pytestmark = pytest.mark.real

QUESTION = "What is the capital of France?"


def _onnxg(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnxg.cli.main", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_cli_answers_paris(smollm2_model: Path) -> None:
    done = _onnxg("chat", "--model", str(smollm2_model), "--temperature", "0", "--max-tokens", "48", QUESTION)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_cli_json_is_a_chat_completion(smollm2_model: Path) -> None:
    from openai.types.chat import ChatCompletion

    done = _onnxg("chat", "--model", str(smollm2_model), "--temperature", "0", "--max-tokens", "48", "--json", QUESTION)
    assert done.returncode == 0, done.stderr
    completion = ChatCompletion.model_validate(json.loads(done.stdout))
    assert completion.object == "chat.completion" and completion.model == smollm2_model.name
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_streamed_equals_complete_and_concurrency_pays(smollm2_model: Path) -> None:
    with GenaiChatModel.load(smollm2_model) as llm:
        messages = [Message("user", QUESTION)]
        greedy = GenerationOptions(max_tokens=40, temperature=0)
        streamed = "".join(i.text for i in llm.stream(messages, greedy) if not isinstance(i, Usage))
        assert streamed == llm.complete(messages, greedy).choices[0].text and "Paris" in streamed

        options = GenerationOptions(max_tokens=48, temperature=0)
        prompts = [[Message("user", f"Write a short poem about {w}.")] for w in ("the sea", "a cat", "snow", "bread")]

        def rate(clients: int) -> float:
            counts = [0] * clients
            barrier = threading.Barrier(clients + 1)

            def run(i: int) -> None:
                barrier.wait()
                counts[i] = llm.complete(prompts[i], options).usage.completion_tokens

            threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            barrier.wait()
            started = time.perf_counter()
            for t in threads:
                t.join()
            return sum(counts) / (time.perf_counter() - started)

        rate(1)
        one, four = rate(1), rate(4)
        assert four > 1.15 * one, (one, four)
