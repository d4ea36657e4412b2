"""`onnxg serve` end to end: a real server process with the tiny chat and embedding models,
driven by the official openai client (max_retries=0) and by raw HTTP."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serverkit import ServerProcess, check_framing, error_of, stream_events

pytestmark = pytest.mark.timeout(900)

SEED_CURLS = Path(__file__).resolve().parent / "data" / "seed-readme-curls.md"  # copied from shared/seed/


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tiny_embed_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProcess(
        ["--model", str(tiny_chat_model), "--model", str(tiny_embed_model)],
        tmp_path_factory.mktemp("serve-api"),
    ).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def chat_id(tiny_chat_model: Path) -> str:
    return tiny_chat_model.name


@pytest.fixture(scope="module")
def embed_id(tiny_embed_model: Path) -> str:
    return tiny_embed_model.name


USER = [{"role": "user", "content": "Say something."}]


# ---------------------------------------------------------------- service


def test_ready_line_health_and_models(
    server: ServerProcess, client: Any, http: httpx.Client, chat_id: str, embed_id: str
) -> None:
    assert f"ready at {server.url}/v1" in server.log()
    assert chat_id in server.log() and embed_id in server.log()
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert sorted(m.id for m in client.models.list()) == sorted([chat_id, embed_id])
    one = client.models.retrieve(chat_id)
    assert one.id == chat_id and one.object == "model" and one.owned_by == "onnxg"


def test_openapi_json(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    post = schema["paths"]["/v1/chat/completions"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"messages", "stream", "top_k", "repetition_penalty"} <= set(request["properties"])
    assert "/v1/embeddings" in schema["paths"] and "/v1/models" in schema["paths"]


# ---------------------------------------------------------------- chat


def test_chat_non_stream(client: Any, http: httpx.Client, chat_id: str) -> None:
    answer = client.chat.completions.create(model=chat_id, messages=USER, max_tokens=8, temperature=0)
    assert answer.object == "chat.completion" and answer.model == chat_id
    choice = answer.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    raw = http.post("/v1/chat/completions", json={"model": chat_id, "messages": USER, "max_tokens": 2})
    assert raw.status_code == 200  # not Litestar's default 201
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.json()["choices"][0]["message"]["refusal"] is None


def test_chat_stream_framing(http: httpx.Client, chat_id: str) -> None:
    body = {"model": chat_id, "messages": USER, "max_tokens": 6, "stream": True, "temperature": 0}
    events, done = stream_events(http, "/v1/chat/completions", body)
    assert done
    check_framing(events, 1, include_usage=False)
    body |= {"n": 2, "temperature": 1.0, "seed": 3, "stream_options": {"include_usage": True}}
    events, done = stream_events(http, "/v1/chat/completions", body)
    assert done
    check_framing(events, 2, include_usage=True)
    usage = events[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 12


def test_stream_matches_non_stream(client: Any, chat_id: str) -> None:
    kwargs = {"model": chat_id, "messages": USER, "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(stream=True, **kwargs)
        if chunk.choices
    ]
    assert "".join(pieces) == whole


def test_stop_strings(client: Any, chat_id: str) -> None:
    kwargs = {"model": chat_id, "messages": USER, "max_tokens": 24, "temperature": 0}
    text = client.chat.completions.create(**kwargs).choices[0].message.content
    assert len(text) >= 6, text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    expected = text[: text.find(stop)]
    for stream in (False, True):
        if stream:
            chunks = list(client.chat.completions.create(stream=True, stop=[stop], **kwargs))
            got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert finish == ["stop"]
        else:
            answer = client.chat.completions.create(stop=stop, **kwargs)
            got = answer.choices[0].message.content
            assert answer.choices[0].finish_reason == "stop"
        assert got == expected


def test_seed_and_n(client: Any, chat_id: str) -> None:
    kwargs = {"model": chat_id, "messages": USER, "max_tokens": 12, "temperature": 1.0}
    first = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    again = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    assert first == again
    others = {client.chat.completions.create(seed=s, **kwargs).choices[0].message.content for s in (1, 2, 3)}
    assert others != {first}
    two = client.chat.completions.create(n=2, seed=7, **kwargs)
    assert [c.index for c in two.choices] == [0, 1]
    assert all(c.message.role == "assistant" for c in two.choices)


def test_sampling_extensions_and_logprobs(http: httpx.Client, chat_id: str) -> None:
    body = {
        "model": chat_id,
        "messages": [{"role": "developer", "content": "Be brief."}, *USER],
        "max_tokens": 4,
        "top_k": 5,
        "repetition_penalty": 1.2,
        "logprobs": True,
        "top_logprobs": 2,
    }
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    content = answer.json()["choices"][0]["logprobs"]["content"]
    assert 0 < len(content) <= 4
    for item in content:
        assert item["logprob"] <= 0 and len(item["top_logprobs"]) == 2
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}


def test_legacy_completions(client: Any, chat_id: str) -> None:
    answer = client.completions.create(model=chat_id, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=chat_id, prompt="Once upon a time", max_tokens=5, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == answer.choices[0].text
    echoed = client.completions.create(model=chat_id, prompt="Once", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Once")


def test_seed_readme_curls_verbatim(server: ServerProcess) -> None:
    """The two curl requests of the original tool's README, as written there (only the port differs)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    text = SEED_CURLS.read_text()
    blocks = [b for b in text.split("```") if b.strip().startswith("curl")]
    assert len(blocks) == 2
    for block in blocks:
        command = block.strip().replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            ["bash", "-c", command + " -s -w '\\n%{http_code}'"], capture_output=True, text=True, timeout=600
        )
        body, _, status = done.stdout.rpartition("\n")
        assert status == "200", done.stdout + done.stderr
        answer = json.loads(body)
        if "/v1/chat/completions" in command:
            assert answer["object"] == "chat.completion"
            assert isinstance(answer["choices"][0]["message"]["content"], str)
        else:
            assert answer["object"] == "list" and len(answer["data"]) == 1
            assert isinstance(answer["data"][0]["embedding"][0], float)


# ---------------------------------------------------------------- embeddings

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "ONNX Runtime", "a", "Bonjour à tous !"]


def test_embeddings_float_and_base64_agree(client: Any, http: httpx.Client, embed_id: str) -> None:
    floats = http.post("/v1/embeddings", json={"model": embed_id, "input": TEXTS, "encoding_format": "float"}).json()
    raw64 = http.post("/v1/embeddings", json={"model": embed_id, "input": TEXTS, "encoding_format": "base64"}).json()
    assert floats["object"] == "list" and floats["model"] == embed_id
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 0
    a = np.array([d["embedding"] for d in floats["data"]], dtype=np.float32)
    b = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw64["data"]])
    assert np.array_equal(a, b)
    # the official client asks for base64 by default and decodes it
    c = np.array([d.embedding for d in client.embeddings.create(model=embed_id, input=TEXTS).data], dtype=np.float32)
    assert np.array_equal(a, c)


def test_embeddings_batch_order_and_single(http: httpx.Client, embed_id: str) -> None:
    batch = http.post("/v1/embeddings", json={"model": embed_id, "input": TEXTS}).json()["data"]
    assert [d["index"] for d in batch] == list(range(len(TEXTS)))
    for i in (0, 3, 4):
        one = http.post("/v1/embeddings", json={"model": embed_id, "input": TEXTS[i]}).json()["data"]
        assert np.allclose(one[0]["embedding"], batch[i]["embedding"], atol=1e-5)


def test_embeddings_dimensions(http: httpx.Client, embed_id: str) -> None:
    full = np.array(
        http.post("/v1/embeddings", json={"model": embed_id, "input": TEXTS}).json()["data"][1]["embedding"]
    )
    cut = http.post("/v1/embeddings", json={"model": embed_id, "input": TEXTS, "dimensions": 8}).json()["data"][1][
        "embedding"
    ]
    assert len(cut) == 8
    expected = full[:8] / np.linalg.norm(full[:8])
    assert np.allclose(cut, expected, atol=1e-5) and abs(np.linalg.norm(cut) - 1) < 1e-5
    too_many = http.post("/v1/embeddings", json={"model": embed_id, "input": "x", "dimensions": len(full) + 1})
    assert too_many.status_code == 400 and error_of(too_many)["param"] == "dimensions"


def test_embeddings_token_ids(http: httpx.Client, embed_id: str) -> None:
    one = http.post("/v1/embeddings", json={"model": embed_id, "input": [5, 6, 7]})
    assert one.status_code == 200, one.text
    many = http.post("/v1/embeddings", json={"model": embed_id, "input": [[5, 6, 7], [8, 9]]}).json()
    assert len(many["data"]) == 2
    assert np.allclose(one.json()["data"][0]["embedding"], many["data"][0]["embedding"], atol=1e-5)


# ---------------------------------------------------------------- metrics


def test_metrics(http: httpx.Client, chat_id: str) -> None:
    events, _ = stream_events(
        http, "/v1/chat/completions", {"model": chat_id, "messages": USER, "max_tokens": 3, "stream": True}
    )
    text = http.get("/metrics").text
    assert 'onnxg_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert f'onnxg_time_to_first_token_seconds_count{{model="{chat_id}"}}' in text
    assert f'onnxg_completion_tokens_total{{model="{chat_id}"}}' in text
    assert "onnxg_request_duration_seconds_bucket" in text
    assert "# TYPE onnxg_requests_in_flight gauge" in text
