"""The server's answers to bad requests, its API key, CORS and concurrency limit, on fake
models (the fast tier): the real app under a real uvicorn, raw HTTP and the official client."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from fakes import SCRIPT, FakeChatModel, FakeEmbeddingModel, words
from serverkit import AppServer, error_of, openai_client, sse_lines

USER = [{"role": "user", "content": "Hi"}]
KEY = "sk-fast-5b1e"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def server() -> Any:
    with AppServer([FakeChatModel(), FakeEmbeddingModel(), FakeChatModel("short-chat", context_length=16)]) as srv:
        yield srv


# ---------------------------------------------------------------- bad requests

CHAT_CASES = [
    ({"messages": USER, "max_tokens": "5"}, "max_tokens"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"messages": USER, "max_completion_tokens": -3}, "max_completion_tokens"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": USER, "temperature": 7}, "temperature"),
    ({"messages": USER, "temperature": -0.1}, "temperature"),
    ({"messages": USER, "top_p": -1}, "top_p"),
    ({"messages": USER, "top_p": 1.5}, "top_p"),
    ({"messages": USER, "top_k": -2}, "top_k"),
    ({"messages": USER, "repetition_penalty": 0}, "repetition_penalty"),
    ({"messages": USER, "presence_penalty": 3}, "presence_penalty"),
    ({"messages": USER, "frequency_penalty": -2.5}, "frequency_penalty"),
    ({"messages": USER, "n": 0}, "n"),
    ({"messages": USER, "n": 129}, "n"),
    ({"messages": USER, "seed": "x"}, "seed"),
    ({"messages": USER, "top_logprobs": 50, "logprobs": True}, "top_logprobs"),
    ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": USER, "stop": [""]}, "stop"),
    ({"messages": USER, "logit_bias": {"5": 1}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
]


@pytest.mark.parametrize(("body", "param"), CHAT_CASES, ids=[c[1] + f"-{i}" for i, c in enumerate(CHAT_CASES)])
def test_chat_validation_names_the_param(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    for stream in (False, True):
        answer = http.post("/v1/chat/completions", json={"model": "fake-chat", "stream": stream, **body})
        assert answer.status_code == 400, answer.text
        error = error_of(answer)
        assert error["type"] == "invalid_request_error" and error["param"] == param, error


COMPLETION_CASES = [
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "temperature": 9}, "temperature"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "", "max_tokens": 2}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "x", "stop": ["1", "2", "3", "4", "5"]}, "stop"),
]


@pytest.mark.parametrize(("body", "param"), COMPLETION_CASES)
def test_completion_validation_names_the_param(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    answer = http.post("/v1/completions", json={"model": "fake-chat", **body})
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


@pytest.mark.parametrize("body", [
    {"prompt": "hello", "repetition_penalty": 5e-324, "top_p": 0.0},
    {"prompt": "hello", "temperature": 1e-300, "top_k": 1},
    {"prompt": "hello", "presence_penalty": 2, "frequency_penalty": -2, "top_p": 1e-9},
])
def test_extreme_accepted_values_are_never_a_5xx(http: httpx.Client, body: dict[str, Any]) -> None:
    answer = http.post("/v1/completions", json={"model": "fake-chat", "max_tokens": 3, **body})
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert error_of(answer)["param"]


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"model": "x", "messages": ',
                                     "é".encode("latin-1"), b'{"messages": 5}'])
def test_invalid_json_and_wrong_body(http: httpx.Client, content: bytes) -> None:
    answer = http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    error_of(answer)


def test_unknown_route_and_method(http: httpx.Client) -> None:
    for path in ("/v1/nope", "/v2/chat/completions"):
        answer = http.get(path)
        assert answer.status_code == 404 and error_of(answer)["type"] == "invalid_request_error"
    wrong = http.delete("/v1/chat/completions")
    assert wrong.status_code == 405
    error_of(wrong)


@pytest.mark.parametrize("model", ["no-such-model", "../../etc/passwd", "/etc/passwd", "..", "x" * 5000])
def test_unknown_models_are_404_never_paths(http: httpx.Client, model: str) -> None:
    for path, body in (("/v1/chat/completions", {"messages": USER}), ("/v1/embeddings", {"input": "x"}),
                       ("/v1/completions", {"prompt": "x"})):
        answer = http.post(path, json={"model": model, **body})
        assert answer.status_code == 404, (path, answer.text)
        error = error_of(answer)
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert len(error["message"]) < 1000


def test_model_paths_and_wrong_kinds(http: httpx.Client) -> None:
    for path in ("/v1/models/no-such", "/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/%2Fetc%2Fpasswd"):
        answer = http.get(path)
        assert answer.status_code == 404 and error_of(answer)["code"] == "model_not_found", path
    wrong = http.post("/v1/embeddings", json={"model": "fake-chat", "input": "x"})
    assert wrong.status_code == 400 and error_of(wrong)["param"] == "model"
    wrong = http.post("/v1/chat/completions", json={"model": "fake-embed", "messages": USER})
    assert wrong.status_code == 400 and error_of(wrong)["param"] == "model"


def test_context_length_exceeded(http: httpx.Client) -> None:
    long = [{"role": "user", "content": "word " * 40}]
    for stream in (False, True):
        answer = http.post("/v1/chat/completions", json={"model": "short-chat", "messages": long, "stream": stream})
        assert answer.status_code == 400, answer.text
        error = error_of(answer)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    answer = http.post("/v1/completions", json={"model": "short-chat", "prompt": "word " * 40})
    assert answer.status_code == 400 and error_of(answer)["param"] == "prompt"


def test_a_runtime_crash_is_a_500_without_detail(http: httpx.Client) -> None:
    for stream in (False, True):
        answer = http.post("/v1/chat/completions", json={
            "model": "fake-chat", "stream": stream, "messages": [{"role": "user", "content": "RAISE:RuntimeError"}]})
        assert answer.status_code == 500, answer.text
        error = error_of(answer)
        assert error["type"] == "server_error" and "Traceback" not in answer.text
        assert "raised on request" not in answer.text  # an internal error's text is not for clients
    assert http.get("/health").status_code == 200  # and the server lives on


def test_runtime_errors_keep_their_meaning(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json={
        "model": "fake-chat", "messages": [{"role": "user", "content": "RAISE:ContextLengthExceeded"}]})
    assert answer.status_code == 400 and error_of(answer)["code"] == "context_length_exceeded"
    answer = http.post("/v1/chat/completions", json={
        "model": "fake-chat", "messages": [{"role": "user", "content": "RAISE:GenerationError"}]})
    assert answer.status_code == 500 and error_of(answer)["type"] == "server_error"


def test_an_error_after_streaming_began_is_a_data_line(http: httpx.Client) -> None:
    import json

    body = {"model": "fake-chat", "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": "FAIL_AFTER:3"}]}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        payloads = list(sse_lines(response))
    assert payloads[-1] != "[DONE]"
    error = json.loads(payloads[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    text = "".join(c["delta"].get("content") or "" for p in payloads[:-1] for c in json.loads(p)["choices"])
    assert text == "".join(words(SCRIPT)[:3])


def test_oversized_body_is_413(server: AppServer) -> None:
    body = b'{"model": "x", "input": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    answer = httpx.post(f"{server.base_url}/embeddings", content=body, headers={"Content-Type": "application/json"},
                        timeout=60)
    assert answer.status_code == 413 and error_of(answer)["code"] == "request_too_large"


# ---------------------------------------------------------------- API key, CORS, the concurrency limit


@pytest.fixture(scope="module")
def guarded() -> Any:
    with AppServer([FakeChatModel()], api_key=KEY, cors_origins=[ORIGIN]) as srv:
        yield srv


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": KEY}, {"Authorization": f"Bearer {KEY}x"}])
def test_the_api_key_guards_v1(guarded: AppServer, headers: dict[str, str]) -> None:
    for answer in (httpx.get(f"{guarded.base_url}/models", headers=headers),
                   httpx.post(f"{guarded.base_url}/chat/completions", json={"messages": USER}, headers=headers)):
        assert answer.status_code == 401 and error_of(answer)["code"] == "invalid_api_key"


def test_the_right_key_and_health_pass(guarded: AppServer) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai_client(guarded, api_key="wrong").models.list()
    assert openai_client(guarded, api_key=KEY).models.list().data
    assert httpx.get(f"{guarded.url}/health").status_code == 200


def test_cors_only_for_the_given_origins(guarded: AppServer) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{guarded.base_url}/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    allowed = preflight(ORIGIN)
    assert allowed.status_code in (200, 204) and allowed.headers.get("access-control-allow-origin") == ORIGIN
    assert preflight("https://evil.example").headers.get("access-control-allow-origin") not in (
        "https://evil.example", "*")


def test_over_the_concurrency_limit_is_429_then_free_again() -> None:
    slow = FakeChatModel("slow-chat", delay=0.05)
    with AppServer([slow], max_concurrency=1) as srv:
        started, finished = threading.Event(), []

        def long_stream() -> None:
            body = {"model": "slow-chat", "messages": USER, "stream": True, "max_tokens": 12}
            with httpx.stream("POST", f"{srv.base_url}/chat/completions", json=body, timeout=30) as response:
                lines = sse_lines(response)
                next(lines)
                started.set()
                finished.append(list(lines)[-1] == "[DONE]")

        worker = threading.Thread(target=long_stream)
        worker.start()
        assert started.wait(10)
        busy = httpx.post(f"{srv.base_url}/chat/completions", json={"messages": USER, "max_tokens": 1})
        assert busy.status_code == 429 and error_of(busy)["code"] == "rate_limit_exceeded"
        assert busy.headers["retry-after"] == "1"
        worker.join(30)
        assert finished == [True]
        deadline = time.monotonic() + 5
        while (again := httpx.post(f"{srv.base_url}/chat/completions", json={"messages": USER})).status_code != 200:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.05)
