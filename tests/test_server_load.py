"""`onnxg serve` under load: concurrent streams, clients that go away, and SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverkit import ServerProcess, sse_lines, stream_events

pytestmark = pytest.mark.timeout(900)

USER = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProcess(["--model", str(tiny_chat_model)], tmp_path_factory.mktemp("serve-load")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def chat_id(tiny_chat_model: Path) -> str:
    return tiny_chat_model.name


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_stream(server: ServerProcess, chat_id: str, max_tokens: int) -> float:
    body = {"model": chat_id, "messages": USER, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        events, done = stream_events(client, f"{server.base_url}/chat/completions", body)
    assert done
    return time.perf_counter() - started


def test_sixteen_concurrent_streams(server: ServerProcess, chat_id: str) -> None:
    def one(i: int) -> tuple[bool, int, set[str]]:
        body = {
            "model": chat_id,
            "messages": USER,
            "max_tokens": 24,
            "seed": i,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.Client(timeout=300) as client:
            events, done = stream_events(client, f"{server.base_url}/chat/completions", body)
        finishes = sum(1 for e in events for c in e["choices"] if c["finish_reason"])
        return done, finishes, {e["id"] for e in events}

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert all(done for done, _, _ in results)
    assert all(finishes == 1 for _, finishes, _ in results)
    ids = [i for _, _, one_id in results for i in one_id]
    assert len(ids) == 16 == len(set(ids))  # one id per stream, distinct across streams


def test_client_disconnect_stops_generation(server: ServerProcess, chat_id: str) -> None:
    assert server.proc is not None
    baseline = min(_timed_stream(server, chat_id, 64) for _ in range(2))

    # a client asks for a very long answer, reads a few chunks and goes away
    body = {"model": chat_id, "messages": USER, "max_tokens": 1900, "temperature": 0, "stream": True}
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
            lines = sse_lines(response)
            for _ in range(4):
                next(lines)
    time.sleep(0.5)

    # the server is as fast as before ...
    after = _timed_stream(server, chat_id, 64)
    assert after < baseline * 2 + 0.5, (baseline, after)
    # ... and idle: the abandoned generation is not running in the background
    time.sleep(0.3)
    cpu_before = _cpu_seconds(server.proc.pid)
    time.sleep(1.5)
    busy = (_cpu_seconds(server.proc.pid) - cpu_before) / 1.5
    assert busy < 0.3, f"server still uses {busy:.0%} of a core after the client left"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "onnxg_requests_in_flight 1" in metrics  # only this /metrics request


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_shutdown_lets_streams_finish(
    sig: signal.Signals, tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    chat_id = tiny_chat_model.name
    srv = ServerProcess(
        ["--model", str(tiny_chat_model), "--grace-period", "60"], tmp_path_factory.mktemp("serve-term")
    ).start()
    try:
        results: list[tuple[bool, int, int]] = []
        first = threading.Barrier(4)
        signalled = threading.Event()

        def one() -> None:
            body = {
                "model": chat_id,
                "messages": USER,
                "max_tokens": 400,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            events = after = 0
            done = False
            with httpx.stream("POST", f"{srv.base_url}/chat/completions", json=body, timeout=120) as response:
                for data in sse_lines(response):
                    events += 1
                    if events == 2:
                        first.wait(60)
                    if signalled.is_set():
                        after += 1
                    done = data == "[DONE]"
            results.append((done, events, after))

        workers = [threading.Thread(target=one) for _ in range(3)]
        for worker in workers:
            worker.start()
        first.wait(60)
        srv.signal(sig)
        signalled.set()
        time.sleep(0.3)
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            httpx.get(f"{srv.url}/health", timeout=5)  # no new requests once shutting down (refused or reset)
        for worker in workers:
            worker.join(120)
        assert srv.wait(60) == 0, srv.log()
        assert len(results) == 3 and all(done for done, _, _ in results), results
        assert any(after > 0 for _, _, after in results), "the streams were still running at SIGTERM"
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", srv.port)) != 0
    finally:
        srv.stop()


def test_concurrent_embedding_requests_equal_the_runtime_bit_for_bit(minilm_int8_model: Path,
                                                                    tmp_path: Path) -> None:
    """Twelve requests at once: while others run, a request's batches go to the model's
    one-thread workers instead of the session with every thread (runtime/embed.py); every
    request still gets exactly the vectors of the runtime called alone."""
    import base64

    import numpy as np

    from onnxg.runtime.embed import OnnxEmbeddingModel

    requests = [[f"request {r} sentence {i} " + "about things " * ((r + i) % 9) for i in range(20 + r * 3)]
                for r in range(12)]
    direct = OnnxEmbeddingModel.load(minilm_int8_model, threads=1)
    expected = [direct.embed(texts, batch_size=32).vectors for texts in requests]
    srv = ServerProcess(["--model", str(minilm_int8_model), "--threads", "2"], tmp_path).start()
    try:
        def ask(texts: list[str]) -> np.ndarray:
            with httpx.Client(timeout=120) as client:
                reply = client.post(f"{srv.base_url}/embeddings", json={
                    "model": minilm_int8_model.name, "input": texts, "encoding_format": "base64"})
            assert reply.status_code == 200, reply.text
            return np.stack([np.frombuffer(base64.b64decode(row["embedding"]), "<f4")
                             for row in reply.json()["data"]])

        with ThreadPoolExecutor(len(requests)) as pool:
            got = list(pool.map(ask, requests * 2))
    finally:
        assert srv.stop() == 0, srv.log()
    for index, vectors in enumerate(got):
        assert np.array_equal(vectors, expected[index % len(requests)]), index
