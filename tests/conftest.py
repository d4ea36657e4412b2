"""Shared fixtures: a private ONNXG_HOME per test, the offline test models, and the two tiers.

The fast tier (``python -m pytest -m "not model"``) needs no converted model and imports no
torch: a test that uses a model fixture is marked ``model`` here automatically; any other
test that builds or converts a model must carry ``@pytest.mark.model`` itself, and a test
that does not is stopped (``modelkit.cache.cached`` refuses, and importing torch or
transformers fails it)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

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


MODEL_FIXTURES = {
    "tiny_chat_model", "smollm2_model", "tf_models", "tf_dense_savedmodel", "tf_text_savedmodel",
    "minilm_model", "minilm_int8_model", "minilm_source", "tiny_embed_model", "tiny_embed_source",
    "tf_converted", "e2e_folders", "sp_model",  # module fixtures of test_convert_tf, test_e2e, test_embed_runtime
}
HEAVY_MODULES = ("torch", "transformers", "tensorflow", "optimum")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


_HEAVY_BEFORE = pytest.StashKey[set]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of the test is set up (module-scoped ones included)."""
    fast = item.get_closest_marker("model") is None
    cache.refused_by = item.nodeid if fast else None
    item.stash[_HEAVY_BEFORE] = {m for m in HEAVY_MODULES if m in sys.modules}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> object:
    """After the test's own teardown: a fast-tier test that imported torch & co. fails."""
    result = yield
    cache.refused_by = None
    if item.get_closest_marker("model") is None:
        leaked = [m for m in HEAVY_MODULES if m in sys.modules and m not in item.stash.get(_HEAVY_BEFORE, set())]
        if leaked:
            pytest.fail(f"{item.nodeid} imported {', '.join(leaked)}: mark it @pytest.mark.model", pytrace=False)
    return result


def pytest_terminal_summary(terminalreporter: object, config: pytest.Config) -> None:
    """Where the browser tests wrote their screenshots (tests/test_ui_browser.py)."""
    folder = getattr(config, "onnxg_ui_screenshots", None)
    if folder is not None:
        terminalreporter.write_line(f"chat page screenshots: {folder}")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def http(server: Any) -> Any:
    """Raw HTTP to the module's ``server`` (an ``AppServer`` or a ``ServerProcess``)."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    """The official openai client on the module's ``server``, retries off."""
    from serverkit import openai_client

    return openai_client(server)
