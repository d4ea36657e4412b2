"""`onnxg serve --kv-cache-mb` on SmolLM2: a request that asks for far more memory than the budget
waits or is refused, never kills the server; an abandoned non-streamed request stops at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

USER = [{"role": "user", "content": "Tell me a long story about a dragon."}]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


@pytest.fixture(scope="module")
def server(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProcess(["--model", str(smollm2_model), "--kv-cache-mb", "1024"],
                        tmp_path_factory.mktemp("serve-budget")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


def test_n_64_without_max_tokens_leaves_the_server_alive(server: ServerProcess, smollm2_model: Path) -> None:
    assert server.proc is not None
    rss_before = _rss_mb(server.proc.pid)
    body = {"model": smollm2_model.name, "messages": USER, "n": 64, "temperature": 1.0}
    peak = rss_before
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after a while; the server must not
        with httpx.Client(timeout=4) as client:
            client.post(f"{server.base_url}/chat/completions", json=body)
    peak = max(peak, _rss_mb(server.proc.pid))
    assert peak - rss_before < 1024 + 300, (rss_before, peak)  # the budget, plus activations
    answer = httpx.post(f"{server.base_url}/chat/completions", timeout=60,
                        json={"model": smollm2_model.name, "messages": USER, "max_tokens": 4})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'onnxg_kv_budget_bytes{{model="{smollm2_model.name}"}} {1024 * 2**20}' in metrics


def test_an_abandoned_non_streamed_request_stops_within_a_second(server: ServerProcess,
                                                                 smollm2_model: Path) -> None:
    assert server.proc is not None
    abandoned = False
    for seed in range(5):  # a sampled reply may end by itself within the client's patience: try again
        body = {"model": smollm2_model.name, "messages": USER, "max_tokens": 4000, "temperature": 1.0, "n": 4,
                "seed": seed}
        try:
            httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=1.5)
        except httpx.ReadTimeout:
            abandoned = True
            break
    assert abandoned, "every reply ended within 1.5 s: no request was abandoned"
    time.sleep(1.0)
    cpu_before = _cpu_seconds(server.proc.pid)
    time.sleep(1.5)
    busy = (_cpu_seconds(server.proc.pid) - cpu_before) / 1.5
    assert busy < 0.3, f"server still uses {busy:.0%} of a core after the client left"

