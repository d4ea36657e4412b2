"""The server's side of the key-value budget and of cancellation, on fake models (fast tier):
a full queue is a 429 with Retry-After, a request that can never fit is a 400, a non-streamed
request whose client leaves stops, usage reports cached prompt tokens, /metrics shows the budget."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fakes import FakeChatModel
from serverkit import AppServer, error_of

USER = [{"role": "user", "content": "Hello"}]


class BudgetedFake(FakeChatModel):
    """A fake that reports the batch engine's figures, as GenaiChatModel.stats does."""

    def stats(self) -> dict[str, int]:
        return {"kv_budget_bytes": 64 * 2**20, "kv_used_bytes": 0, "rows_waiting": 0}


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"chat": BudgetedFake(), "slow": FakeChatModel("slow-chat", delay=0.05)}


@pytest.fixture(scope="module")
def server(models: dict[str, Any]) -> Any:
    with AppServer(list(models.values())) as srv:
        yield srv


def _post(server: AppServer, content: str, **extra: Any) -> httpx.Response:
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=30)


def test_a_full_queue_is_429_with_retry_after(server: AppServer) -> None:
    for stream in (False, True):
        answer = _post(server, "RAISE:QueueFull", stream=stream)
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
        assert error_of(answer)["code"] == "rate_limit_exceeded"


def test_a_request_that_can_never_fit_is_400(server: AppServer) -> None:
    answer = _post(server, "RAISE:KVBudgetExceeded")
    assert answer.status_code == 400 and error_of(answer)["code"] == "kv_cache_exceeded"


def test_usage_reports_cached_prompt_tokens(server: AppServer) -> None:
    usage = _post(server, "Hello").json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}


def test_a_non_streamed_request_abandoned_by_its_client_stops(server: AppServer, models: dict[str, Any]) -> None:
    slow = models["slow"]
    before = slow.cancelled
    body = {"model": "slow-chat", "messages": USER, "max_tokens": 10_000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=0.3)
    deadline = time.monotonic() + 1.0
    while (slow.active or slow.cancelled == before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow.active == 0 and slow.cancelled == before + 1  # stopped within a second
    assert _post(server, "Hello").status_code == 200


def test_metrics_show_the_key_value_budget(server: AppServer) -> None:
    text = httpx.get(f"{server.base_url.removesuffix('/v1')}/metrics", timeout=10).text
    assert f'onnxg_kv_budget_bytes{{model="fake-chat"}} {64 * 2**20}' in text
    assert 'onnxg_rows_waiting{model="fake-chat"} 0' in text
