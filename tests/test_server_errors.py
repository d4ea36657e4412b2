"""Every error of `onnxg serve` is OpenAI's error JSON with the right status, code and param;
the API key, CORS and the concurrency limit; no 5xx under OpenAI's own schema."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.response import Stream

from serverkit import ServerProcess, error_of, free_port, onnxg_command, openai_client, openai_subset, sse_lines

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


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": []}, "messages"),
        ({}, "messages"),
        ({"messages": USER, "temperature": 7}, "temperature"),
        ({"messages": USER, "top_p": -1}, "top_p"),
        ({"messages": USER, "n": 0}, "n"),
        ({"messages": USER, "top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}] * 2},
         "tools[1].function.name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_chat_validation_names_the_param(http: httpx.Client, chat_id: str, body: dict[str, Any], param: str) -> None:
    answer = http.post("/v1/chat/completions", json={"model": chat_id, **body})
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def test_invalid_json_and_wrong_body(http: httpx.Client) -> None:
    for content in (b"{not json", b"", b"[1, 2]", b'{"model": "x", "messages": ', "é".encode("latin-1")):
        answer = http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, (content, answer.text)
        error_of(answer)


def test_unknown_route_and_method(http: httpx.Client, server: ServerProcess) -> None:
    for path in ("/v1/nope", "/v2/chat/completions", "/"):
        answer = http.get(path)
        assert answer.status_code == 404, path
        assert error_of(answer)["type"] == "invalid_request_error"
    wrong = http.delete("/v1/chat/completions")
    assert wrong.status_code == 405
    error_of(wrong)
    assert http.get("/v1/embeddings").status_code == 405


def test_unknown_model_and_paths(http: httpx.Client, chat_id: str, embed_id: str) -> None:
    for model in ("no-such-model", "../../etc/passwd", "/etc/passwd", "..", str(Path.home())):
        answer = http.post("/v1/chat/completions", json={"model": model, "messages": USER})
        assert answer.status_code == 404, model
        error = error_of(answer)
        assert error["code"] == "model_not_found" and error["param"] == "model"
        embed = http.post("/v1/embeddings", json={"model": model, "input": "x"})
        assert embed.status_code == 404 and error_of(embed)["code"] == "model_not_found"
    for path in ("/v1/models/no-such", "/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/%2Fetc%2Fpasswd"):
        answer = http.get(path)
        assert answer.status_code == 404, path
        assert error_of(answer)["code"] == "model_not_found"
    wrong_kind = http.post("/v1/embeddings", json={"model": chat_id, "input": "x"})
    assert wrong_kind.status_code == 400 and error_of(wrong_kind)["param"] == "model"
    wrong_kind = http.post("/v1/chat/completions", json={"model": embed_id, "messages": USER})
    assert wrong_kind.status_code == 400 and error_of(wrong_kind)["param"] == "model"


def test_embedding_input_errors(http: httpx.Client, embed_id: str) -> None:
    for value in ([], "", [""], [1, "a"], [[1], "a"], [[]], {"a": 1}, None, [True], [-1]):
        answer = http.post("/v1/embeddings", json={"model": embed_id, "input": value})
        assert answer.status_code == 400, (value, answer.text)
        assert error_of(answer)["param"] == "input"
    answer = http.post("/v1/embeddings", json={"model": embed_id, "input": "x", "encoding_format": "hex"})
    assert answer.status_code == 400 and error_of(answer)["param"] == "encoding_format"


def test_context_length_exceeded(http: httpx.Client, chat_id: str, embed_id: str) -> None:
    long = "hello " * 50_000
    for stream in (False, True):
        answer = http.post(
            "/v1/chat/completions",
            json={"model": chat_id, "messages": [{"role": "user", "content": long}], "stream": stream},
        )
        assert answer.status_code == 400, answer.text[:500]
        assert error_of(answer)["code"] == "context_length_exceeded"


def test_oversized_body(server: ServerProcess) -> None:
    body = b'{"model": "x", "input": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    answer = httpx.post(
        f"{server.base_url}/embeddings",
        content=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413
    assert error_of(answer)["code"] == "request_too_large"


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


# ---------------------------------------------------------------- concurrency limit


def test_over_the_concurrency_limit(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    chat_id = tiny_chat_model.name
    with ServerProcess(
        ["--model", str(tiny_chat_model), "--max-concurrency", "1"], tmp_path_factory.mktemp("serve-limit")
    ) as srv:
        started = threading.Event()
        finished: list[bool] = []

        def long_stream() -> None:
            body = {"model": chat_id, "messages": USER, "max_tokens": 200, "stream": True}
            with httpx.stream("POST", f"{srv.base_url}/chat/completions", json=body, timeout=120) as response:
                lines = sse_lines(response)
                next(lines)
                started.set()
                finished.append(list(lines)[-1] == "[DONE]")

        worker = threading.Thread(target=long_stream)
        worker.start()
        assert started.wait(60)
        busy = httpx.post(
            f"{srv.base_url}/chat/completions", json={"model": chat_id, "messages": USER, "max_tokens": 1}
        )
        assert busy.status_code == 429
        assert error_of(busy)["code"] == "rate_limit_exceeded"
        assert busy.headers["retry-after"] == "1"
        worker.join(120)
        assert finished == [True]
        deadline = time.monotonic() + 10
        while True:  # the slot is freed once the stream's body is done
            again = httpx.post(
                f"{srv.base_url}/chat/completions", json={"model": chat_id, "messages": USER, "max_tokens": 1}
            )
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert again.status_code == 200


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
