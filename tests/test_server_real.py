"""`onnxg serve` with the real SmolLM2-135M-Instruct and all-MiniLM-L6-v2 loaded together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serverkit import ServerProcess, openai_client

pytestmark = [pytest.mark.real, pytest.mark.timeout(1800)]

SENTENCES = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "ONNX Runtime runs models fast on CPUs.",
    "Rain won't stop me. Wind won't stop me.",
]


@pytest.fixture(scope="module")
def server(smollm2_model: Path, minilm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProcess(
        ["--model", str(smollm2_model), "--model", str(minilm_model)], tmp_path_factory.mktemp("serve-real")
    ).start()
    yield srv
    assert srv.stop() == 0, srv.log()


def test_chat_about_france_mentions_paris(server: ServerProcess, smollm2_model: Path) -> None:
    client = openai_client(server)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(model=smollm2_model.name, messages=messages, max_tokens=48, temperature=0)
    assert "Paris" in answer.choices[0].message.content, answer.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=smollm2_model.name, messages=messages, max_tokens=48, temperature=0, stream=True
        )
        if c.choices
    )
    assert "Paris" in streamed


def test_embeddings_match_sentence_transformers(server: ServerProcess, minilm_model: Path, minilm_source: Path) -> None:
    from sentence_transformers import SentenceTransformer

    client = openai_client(server)
    served = np.array([d.embedding for d in client.embeddings.create(model=minilm_model.name, input=SENTENCES).data])
    reference = SentenceTransformer(str(minilm_source), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    cosine = np.sum(served * reference, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.9999, cosine
