"""Errors of a real `onnxg serve` process on real models: the API key and CORS given on the
command line, the real tokenizer's context length, start-up errors, no 5xx under OpenAI's own
schema. The HTTP layer's validation, 404s, 413 and the concurrency limit are tested on fake
models in test_fast_server.py."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.response import Stream

from serverkit import ServerProcess, error_of, free_port, onnxg_command, openai_client, openai_subset

pytestmark = pytest.mark.timeout(900)

KEY = "sk-test-8f2d1c0b7e"
ORIGIN = "https://app.example"
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tiny_embed_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProcess(
        ["--model", str(tiny_chat_model), "--model", str(tiny_embed_model), "--cors-origin", ORIGIN],
        tmp_path_factory.mktemp("serve-errors"),
        env={"ONNXG_API_KEY": KEY},
    ).start()
    yield srv
    assert srv.stop() == 0, srv.log()
    assert KEY not in srv.log()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Any:
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def chat_id(tiny_chat_model: Path) -> str:
    return tiny_chat_model.name


@pytest.fixture(scope="module")
def embed_id(tiny_embed_model: Path) -> str:
    return tiny_embed_model.name


# ---------------------------------------------------------------- API key and CORS


def test_api_key(server: ServerProcess, chat_id: str) -> None:
    import openai

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        answer = httpx.get(f"{server.base_url}/models", headers=headers)
        assert answer.status_code == 401
        assert error_of(answer)["code"] == "invalid_api_key"
    post = httpx.post(f"{server.base_url}/chat/completions", json={"model": chat_id, "messages": USER})
    assert post.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, api_key="wrong").models.list()
    assert openai_client(server, api_key=KEY).models.list().data
    assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed


def test_cors_only_for_given_origins(server: ServerProcess) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{server.base_url}/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    allowed = preflight(ORIGIN)
    assert allowed.status_code in (200, 204)
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    other = preflight("https://evil.example")
    assert other.headers.get("access-control-allow-origin") not in ("https://evil.example", "*")
    answer = httpx.get(f"{server.url}/health", headers={"Origin": "https://evil.example"})
    assert answer.headers.get("access-control-allow-origin") not in ("https://evil.example", "*")


# ---------------------------------------------------------------- bad requests


def test_context_length_exceeded(http: httpx.Client, chat_id: str, embed_id: str) -> None:
    long = "hello " * 50_000
    for stream in (False, True):
        answer = http.post(
            "/v1/chat/completions",
            json={"model": chat_id, "messages": [{"role": "user", "content": long}], "stream": stream},
        )
        assert answer.status_code == 400, answer.text[:500]
        assert error_of(answer)["code"] == "context_length_exceeded"


def test_internal_error_is_openai_json_without_traceback() -> None:
    """The app's handler on an unexpected exception (in-process: nothing we ship raises one on purpose)."""
    from litestar import get
    from litestar.testing import create_test_client

    from onnxg.server import errors

    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret C++ detail at 0xdeadbeef")

    with create_test_client([boom], exception_handlers={Exception: errors.handle}) as test_client:
        answer = test_client.get("/boom")
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "server_error" and "0xdeadbeef" not in answer.text and "Traceback" not in answer.text


# ---------------------------------------------------------------- OpenAI's schema


def test_schemathesis_no_server_errors(server: ServerProcess, chat_id: str, embed_id: str) -> None:
    """OpenAI's own spec, fuzzed against createChatCompletion, createEmbedding and listModels:
    any 4xx is fine, no 5xx and no hang."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_path(str(openai_subset()))
    schema.config.update(base_url=server.base_url)
    operations = [
        ("POST", "/chat/completions", chat_id, 15),
        ("POST", "/embeddings", embed_id, 20),
        ("GET", "/models", None, 5),
    ]
    failures: list[str] = []
    for method, path, model, examples in operations:
        operation = schema[path][method]

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            if model is not None and isinstance(case.body, dict):
                case.body["model"] = model
                if path == "/chat/completions":
                    case.body["max_tokens"] = 4
                    case.body.pop("max_completion_tokens", None)
                    case.body.pop("n", None)
            response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
            if response.status_code >= 500:
                failures.append(f"{method} {path} -> {response.status_code}: {response.text[:300]}")

        check()
    assert not failures, "\n".join(failures[:5])


# ---------------------------------------------------------------- start-up errors


def _serve(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONNXG_HOME": str(home)}
    env.pop("ONNXG_DEBUG", None)
    command = [*onnxg_command(), "serve", *args, "--port", str(free_port())]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_startup_errors_are_one_line(tmp_path: Path, tiny_chat_model: Path) -> None:
    missing = _serve(["--model", "no-such-model"], tmp_path)
    assert missing.returncode == 1
    assert "no-such-model" in missing.stderr and "Traceback" not in missing.stderr + missing.stdout

    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    broken = _serve(["--model", str(not_a_model)], tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert "Error:" in broken.stderr and "Traceback" not in broken.stderr + broken.stdout
    assert "ready at" not in broken.stdout

    twice = _serve(["--model", str(tiny_chat_model), "--model", str(tiny_chat_model)], tmp_path)
    assert twice.returncode == 1 and "served as" in twice.stderr


def test_error_after_streaming_began_is_a_data_line() -> None:
    """In-process: a runtime iterator that fails after its first chunk (as a generation error
    would) ends the SSE body with a ``data:`` line holding an OpenAI error object."""
    import json

    from litestar import post
    from litestar.testing import create_test_client

    from onnxg.runtime.contracts import Chunk
    from onnxg.runtime.errors import OnnxgError
    from onnxg.server import errors
    from onnxg.server.limits import Slots
    from onnxg.server.routes.chat import ChatFormat
    from onnxg.server.routes.common import event_stream, open_stream

    slots = Slots(1)

    def failing(cancel: threading.Event) -> Any:
        yield Chunk(index=0, text="Hel")
        raise OnnxgError("the generator failed")

    @post("/stream", status_code=200)
    async def stream() -> Stream:
        slot = slots.acquire()
        first, iterator = await open_stream(failing, slot)
        body = event_stream(
            ChatFormat("m", 1, False), first, iterator, slot,
            n=1, include_usage=False, on_first_token=lambda: None, on_usage=lambda _: None,
        )  # fmt: skip
        return Stream(body, media_type="text/event-stream")

    with create_test_client([stream], exception_handlers={Exception: errors.handle}) as test_client:
        lines = [line for line in test_client.post("/stream").text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines)
    payloads = [json.loads(line[6:]) for line in lines]
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[1]["choices"][0]["delta"]["content"] == "Hel"
    assert payloads[-1]["error"]["message"] == "the generator failed"
    assert set(payloads[-1]["error"]) == {"message", "type", "param", "code"}
    assert slots.used == 0  # the slot came back
