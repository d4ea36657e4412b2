"""The server's HTTP behaviour on fake models (the fast tier): the real app under a real
uvicorn, the official ``openai`` client and raw HTTP, with no onnxruntime model.

Bad requests, the API key, CORS and the concurrency limit are in test_fast_server_errors.py;
what needs a real model's text or numbers stays in test_server_api.py / test_server_errors.py."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
from fakes import SCRIPT, FakeChatModel, FakeEmbeddingModel, words
from serverkit import AppServer, check_framing, error_of, sse_lines, stream_events

USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"chat": FakeChatModel(), "slow": FakeChatModel("slow-chat", delay=0.05),
            "embed": FakeEmbeddingModel(), "short": FakeChatModel("short-chat", context_length=16)}


@pytest.fixture(scope="module")
def server(models: dict[str, Any]) -> Any:
    with AppServer(list(models.values())) as srv:
        yield srv




# ---------------------------------------------------------------- start-up, models, health


def test_models_are_warmed_and_listed_with_their_kind(models: dict[str, Any], client: Any, http: httpx.Client) -> None:
    assert all(m.warmed for m in models.values())
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {"fake-chat", "slow-chat", "fake-embed", "short-chat"}
    raw = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert raw["fake-chat"]["kind"] == "chat" and raw["fake-chat"]["context_length"] == 256
    assert raw["fake-embed"]["kind"] == "embedding" and raw["fake-embed"]["dimensions"] == 8
    assert raw["fake-embed"]["context_length"] == 32
    one = client.models.retrieve("fake-chat")
    assert one.id == "fake-chat" and one.object == "model" and one.owned_by == "onnxg"
    health = http.get("/health").json()
    assert health["status"] == "ok" and sorted(health["models"]) == sorted(listed)


def test_models_are_closed_when_the_server_stops() -> None:
    chat, embed = FakeChatModel(), FakeEmbeddingModel()
    with AppServer([chat, embed], warmup=False):
        assert not chat.warmed and not embed.warmed
    assert chat.closed and embed.closed


def test_two_models_with_one_id_are_refused() -> None:
    from onnxg.runtime.errors import InvalidRequest
    from onnxg.server.registry import Registry

    with pytest.raises(InvalidRequest, match="served as 'fake-chat'"):
        Registry.of([FakeChatModel(), FakeChatModel()])


def test_openapi_json(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    post = schema["paths"]["/v1/chat/completions"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"messages", "stream", "top_k", "repetition_penalty"} <= set(request["properties"])
    assert {"/v1/embeddings", "/v1/models", "/v1/completions"} <= set(schema["paths"])


# ---------------------------------------------------------------- chat


def test_chat_non_stream(client: Any, http: httpx.Client) -> None:
    answer = client.chat.completions.create(model="fake-chat", messages=USER, temperature=0)
    assert answer.object == "chat.completion" and answer.model == "fake-chat"
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == SCRIPT
    assert choice.finish_reason == "stop"
    assert answer.usage.completion_tokens == len(words(SCRIPT))
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    raw = http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": USER})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
    assert raw.json()["choices"][0]["message"]["refusal"] is None
    assert raw.json()["id"].startswith("chatcmpl-") and raw.json()["system_fingerprint"]


def test_an_empty_model_means_the_first_chat_model(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json={"messages": USER})
    assert answer.status_code == 200 and answer.json()["model"] == "fake-chat"
    embedded = http.post("/v1/embeddings", json={"input": "x"})
    assert embedded.status_code == 200 and embedded.json()["model"] == "fake-embed"


def test_max_tokens_ends_with_length(client: Any) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        answer = client.chat.completions.create(model="fake-chat", messages=USER, temperature=0, **{name: 3})
        assert answer.choices[0].finish_reason == "length"
        assert answer.choices[0].message.content == "".join(words(SCRIPT)[:3])
        assert answer.usage.completion_tokens == 3


def test_stream_framing_and_usage(http: httpx.Client) -> None:
    body = {"model": "fake-chat", "messages": USER, "stream": True, "temperature": 0}
    events, done = stream_events(http, "/v1/chat/completions", body)
    assert done and check_framing(events, 1, include_usage=False) == {0: SCRIPT}
    body |= {"n": 3, "temperature": 1.0, "seed": 5, "stream_options": {"include_usage": True}}
    events, done = stream_events(http, "/v1/chat/completions", body)
    assert done
    texts = check_framing(events, 3, include_usage=True)
    assert all(sorted(words(t)) == sorted(words(SCRIPT)) for t in texts.values())
    assert events[-1]["usage"]["completion_tokens"] == 3 * len(words(SCRIPT))


def test_stream_matches_non_stream_through_the_sdk(client: Any) -> None:
    kwargs = {"model": "fake-chat", "messages": USER, "temperature": 0.8, "seed": 11, "max_tokens": 7}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)
              if c.choices]
    assert "".join(pieces) == whole and len(words(whole)) == 7


def test_stop_strings_streamed_or_not(client: Any) -> None:
    stop = "fake"
    expected = SCRIPT[:SCRIPT.index(stop)]
    answer = client.chat.completions.create(model="fake-chat", messages=USER, temperature=0, stop=stop)
    assert answer.choices[0].message.content == expected and answer.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="fake-chat", messages=USER, temperature=0, stop=["zz", stop],
                                                  stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_seed_gives_the_same_text_and_n_gives_choices(client: Any) -> None:
    kwargs = {"model": "fake-chat", "messages": USER, "temperature": 1.0}
    first = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    assert client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content == first
    assert {client.chat.completions.create(seed=s, **kwargs).choices[0].message.content for s in (1, 2, 3)} != {first}
    two = client.chat.completions.create(n=2, seed=7, **kwargs)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content != two.choices[1].message.content


def test_logprobs(http: httpx.Client) -> None:
    body = {"model": "fake-chat", "messages": USER, "max_tokens": 4, "logprobs": True, "top_logprobs": 2,
            "temperature": 0}
    content = http.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == words(SCRIPT)[:4]
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"} and len(item["top_logprobs"]) == 2
        assert bytes(item["bytes"]).decode() == item["token"]
    plain = http.post("/v1/chat/completions", json={**body, "logprobs": False, "top_logprobs": 0}).json()
    assert plain["choices"][0]["logprobs"] is None


def test_reasoning_is_reported_apart(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": [
        {"role": "user", "content": "THINK first"}], "temperature": 0}).json()
    message = answer["choices"][0]["message"]
    assert message["content"] == SCRIPT and message["reasoning_content"] == "Let me think about it."
    events, _ = stream_events(http, "/v1/chat/completions", {"model": "fake-chat", "stream": True, "temperature": 0,
                                                             "messages": [{"role": "user", "content": "THINK"}]})
    reasoning = "".join(c["delta"].get("reasoning_content") or "" for e in events for c in e["choices"])
    assert reasoning == "Let me think about it."


def test_developer_and_content_parts_are_accepted(http: httpx.Client) -> None:
    body = {"model": "fake-chat", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None}, {"role": "user", "content": "again"}]}
    assert http.post("/v1/chat/completions", json=body).status_code == 200


def test_legacy_completions(client: Any) -> None:
    answer = client.completions.create(model="fake-chat", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].finish_reason == "length"
    assert answer.choices[0].text == "".join(words(SCRIPT)[:5])
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="fake-chat", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == answer.choices[0].text
    echoed = client.completions.create(model="fake-chat", prompt="Once", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Once" + words(SCRIPT)[0])


# ---------------------------------------------------------------- embeddings

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "ONNX Runtime", "a", "Bonjour à tous !"]


def test_embeddings_float_base64_and_the_sdk_agree(client: Any, http: httpx.Client, models: dict[str, Any]) -> None:
    floats = http.post("/v1/embeddings", json={"model": "fake-embed", "input": TEXTS}).json()
    raw64 = http.post("/v1/embeddings", json={"model": "fake-embed", "input": TEXTS,
                                              "encoding_format": "base64"}).json()
    a = np.array([d["embedding"] for d in floats["data"]], dtype=np.float32)
    b = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw64["data"]])
    c = np.array([d.embedding for d in client.embeddings.create(model="fake-embed", input=TEXTS).data], np.float32)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(a[1], models["embed"].vector(TEXTS[1].split()))
    assert [d["index"] for d in floats["data"]] == list(range(len(TEXTS)))
    tokens = sum(len(t.split()) for t in TEXTS)
    assert floats["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # numbers in float32's shortest exact form, as OpenAI writes them (0.12573022, not the
    # double 0.12573021650314331): each is the shortest text that reads back as the same float32
    text = http.post("/v1/embeddings", json={"model": "fake-embed", "input": TEXTS[1]}).text
    numbers = text.split('"embedding":[')[1].split("]")[0].split(",")
    assert [np.float32(n) for n in numbers] == list(b[1])
    assert all(len(n.lstrip("-")) <= len(repr(float(np.float32(n))).lstrip("-")) for n in numbers)
    assert any(len(n.lstrip("-")) < len(repr(float(np.float32(n))).lstrip("-")) for n in numbers), numbers


def test_embeddings_dimensions_and_token_ids(http: httpx.Client) -> None:
    full = np.array(http.post("/v1/embeddings", json={"model": "fake-embed", "input": "x y"}).json()
                    ["data"][0]["embedding"])
    cut = http.post("/v1/embeddings", json={"model": "fake-embed", "input": "x y", "dimensions": 3}).json()
    assert np.allclose(cut["data"][0]["embedding"], full[:3] / np.linalg.norm(full[:3]), atol=1e-6)
    for bad in (0, 9, -1):
        answer = http.post("/v1/embeddings", json={"model": "fake-embed", "input": "x", "dimensions": bad})
        assert answer.status_code == 400 and error_of(answer)["param"] == "dimensions", bad
    one = http.post("/v1/embeddings", json={"model": "fake-embed", "input": [5, 6, 7]}).json()
    many = http.post("/v1/embeddings", json={"model": "fake-embed", "input": [[5, 6, 7], [8]]}).json()
    assert one["data"][0]["embedding"] == many["data"][0]["embedding"] and len(many["data"]) == 2


@pytest.mark.parametrize("value", [[], "", [""], [1, "a"], [[1], "a"], [[]], {"a": 1}, None, [True], [-1]])
def test_embedding_input_errors(http: httpx.Client, value: Any) -> None:
    answer = http.post("/v1/embeddings", json={"model": "fake-embed", "input": value})
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == "input"


def test_embedding_format_error(http: httpx.Client) -> None:
    answer = http.post("/v1/embeddings", json={"model": "fake-embed", "input": "x", "encoding_format": "hex"})
    assert answer.status_code == 400 and error_of(answer)["param"] == "encoding_format"


# ---------------------------------------------------------------- streams and clients that leave


def test_a_client_that_disconnects_stops_the_generation(server: AppServer, models: dict[str, Any]) -> None:
    slow = models["slow"]
    before = slow.cancelled
    body = {"model": "slow-chat", "messages": USER, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=30) as response:
        lines = sse_lines(response)
        next(lines), next(lines)
    deadline = time.monotonic() + 5
    while (slow.active or slow.cancelled == before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slow.active == 0 and slow.cancelled == before + 1


def test_concurrent_streams_all_complete(server: AppServer) -> None:
    results: list[str] = []

    def one(seed: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            events, done = stream_events(c, "/chat/completions", {"model": "fake-chat", "messages": USER,
                                                                  "stream": True, "seed": seed})
            assert done
            results.append("".join(ch["delta"].get("content") or "" for e in events for ch in e["choices"]))

    threads = [threading.Thread(target=one, args=(s,)) for s in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 12 and all(sorted(words(r)) == sorted(words(SCRIPT)) for r in results)


def test_metrics_count_requests_and_tokens(http: httpx.Client) -> None:
    stream_events(http, "/v1/chat/completions", {"model": "fake-chat", "messages": USER, "max_tokens": 3,
                                                 "stream": True})
    text = http.get("/metrics").text
    assert 'onnxg_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert "onnxg_completion_tokens_total" in text or "completion_tokens" in text
