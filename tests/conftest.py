"""Shared fixtures: a private ONNXG_HOME per test, and the offline test models."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from modelkit import cache
from modelkit.chat import smollm2_model, tiny_chat_model  # noqa: F401
from modelkit.tf import tf_dense_savedmodel, tf_models, tf_text_savedmodel  # noqa: F401
from modelkit.embed import minilm_int8_model, minilm_model, minilm_source, tiny_embed_model, tiny_embed_source  # noqa: F401

# The converter toolchains are shared by every test session on this machine.
os.environ.setdefault("ONNXG_TOOLCHAINS", str(cache.toolchains()))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def onnxg_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty ONNXG_HOME of its own."""
    path = tmp_path_factory.mktemp("onnxg-home")
    monkeypatch.setenv("ONNXG_HOME", str(path))
    return path


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
