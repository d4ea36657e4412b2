"""`onnxg bench`: the project's own llama-bench, in-process or through a running server.

Every figure is measured ``runs`` times; the report keeps the median and the spread
(min, max). Chat: load time, time to first token, prefill and decode tokens/s at 1 and N
concurrent requests, peak memory. Embeddings: sentences/s and p50/p95 batch latency at
several batch sizes. ``--server URL`` measures the same over HTTP (streamed SSE for chat).
"""

from __future__ import annotations

import json
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from onnxg.runtime.errors import InvalidRequest, OnnxgError

SCHEMA = "onnxg.bench/1"
_WORDS = (
    "the quick brown fox jumps over the lazy dog while a curious cat watches from the old "
    "stone wall and the morning sun rises slowly above the quiet river valley"
).split()


@dataclass
class Metric:
    name: str
    unit: str
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": round(self.median, 4),
            "min": round(min(self.values), 4) if self.values else 0.0,
            "max": round(max(self.values), 4) if self.values else 0.0,
            "runs": len(self.values),
        }


@dataclass
class Report:
    model: str
    kind: str
    target: str  # "in-process" or the server URL
    settings: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)

    def add(self, name: str, unit: str, values: Sequence[float]) -> None:
        self.metrics.append(Metric(name, unit, [float(v) for v in values]))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "kind": self.kind,
            "target": self.target,
            "settings": self.settings,
            "metrics": [m.to_json() for m in self.metrics],
        }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_prompt(count_tokens: Callable[[str], int], tokens: int) -> str:
    """A plain-text prompt of about ``tokens`` tokens (by the model's own tokenizer)."""
    words: list[str] = []
    i = 0
    while True:
        words.extend(_WORDS[j % len(_WORDS)] for j in range(i, i + 16))
        i += 16
        if count_tokens(" ".join(words)) >= tokens:
            break
    while len(words) > 1 and count_tokens(" ".join(words[:-1])) >= tokens:
        words.pop()
    return " ".join(words)


def make_sentences(count: int) -> list[str]:
    return [" ".join(_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(6 + i % 20)) for i in range(count)]


# --- one streamed request, measured --------------------------------------------------------


@dataclass
class _Timed:
    ttft: float
    total: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def decode_tps(self) -> float:
        span = self.total - self.ttft
        return (self.completion_tokens - 1) / span if self.completion_tokens > 1 and span > 0 else 0.0


def _time_stream(items: Iterator[Any], usage_of: Callable[[Any], tuple[int, int] | None]) -> _Timed:
    start = time.perf_counter()
    first: float | None = None
    usage: tuple[int, int] | None = None
    for item in items:
        got = usage_of(item)
        if got is not None:
            usage = got
        elif first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    if usage is None:
        raise OnnxgError("the stream ended without usage counts")
    return _Timed(first if first is not None else total, total, usage[0], usage[1])


# --- chat ---------------------------------------------------------------------------------


class _LocalChat:
    def __init__(self, ref: str, threads: int | None) -> None:
        from onnxg.runtime.chat import GenaiChatModel

        start = time.perf_counter()
        self.model = GenaiChatModel.load(ref, threads=threads)
        self.load_seconds = time.perf_counter() - start
        self.name = self.model.name

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def request(self, prompt: str, max_tokens: int) -> _Timed:
        from onnxg.runtime.contracts import Usage
        from onnxg.runtime.options import GenerationOptions

        options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
        return _time_stream(
            self.model.stream(prompt, options),
            lambda item: (item.prompt_tokens, item.completion_tokens) if isinstance(item, Usage) else None,
        )


class _HttpChat:
    def __init__(self, url: str, model: str | None, api_key: str | None) -> None:
        import httpx

        self.base = _v1(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(600.0, connect=10.0))
        self.name = model or _first_model(self.client, self.base, "chat")
        self.load_seconds = 0.0

    def count_tokens(self, text: str) -> int:
        # No tokenizer endpoint in the OpenAI API: ask for one token and read the usage.
        body = {"model": self.name, "prompt": text, "max_tokens": 1, "temperature": 0}
        reply = self.client.post(f"{self.base}/completions", json=body)
        _raise_for(reply)
        return int(reply.json()["usage"]["prompt_tokens"])

    def request(self, prompt: str, max_tokens: int) -> _Timed:
        body = {
            "model": self.name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True},
        }

        def events() -> Iterator[dict[str, Any]]:
            with self.client.stream("POST", f"{self.base}/completions", json=body) as reply:
                if reply.status_code != 200:
                    reply.read()
                    _raise_for(reply)
                for line in reply.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        event = json.loads(line[6:])
                        if "error" in event:
                            raise OnnxgError(f"server error: {event['error'].get('message')}")
                        if event.get("choices") or event.get("usage"):
                            yield event

        def usage_of(event: dict[str, Any]) -> tuple[int, int] | None:
            if not event.get("choices") and event.get("usage"):
                return event["usage"]["prompt_tokens"], event["usage"]["completion_tokens"]
            return None

        return _time_stream(events(), usage_of)


def _v1(url: str) -> str:
    """The server's OpenAI base URL: ``url`` with ``/v1`` appended unless it ends with it."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


@contextmanager
def _reaching(url: str | None) -> Iterator[None]:
    """Turn a failed connection to ``url`` (a refused port, a timeout) into an OnnxgError."""
    if not url:
        yield
        return
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise OnnxgError(
            f"cannot reach an onnxg server at {url}",
            hint="start one with `onnxg serve --detach`, or check --server",
        ) from exc


def _raise_for(reply: Any) -> None:
    if reply.status_code >= 400:
        try:
            message = reply.json()["error"]["message"]
        except Exception:
            message = reply.text[:200]
        raise OnnxgError(f"server answered {reply.status_code}: {message}")


def _first_model(client: Any, base: str, kind: str) -> str:
    reply = client.get(f"{base}/models")
    _raise_for(reply)
    models = reply.json().get("data", [])
    if not models:
        raise OnnxgError("the server serves no model")
    for model in models:
        if model.get("kind", model.get("owned_by", "")) in (kind, "embedding" if kind == "embed" else kind):
            return model["id"]
    return models[0]["id"]


def bench_chat(
    ref: str | None,
    *,
    server: str | None = None,
    api_key: str | None = None,
    prompt_tokens: int = 128,
    max_tokens: int = 64,
    concurrency: int = 4,
    runs: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    if runs < 1 or concurrency < 1 or prompt_tokens < 1 or max_tokens < 2:
        raise InvalidRequest("runs, concurrency and prompt length must be >= 1, output length >= 2")
    with _reaching(server):
        return _bench_chat(ref, server, api_key, prompt_tokens, max_tokens, concurrency, runs, threads,
                           progress or (lambda _text: None))


def _bench_chat(
    ref: str | None, server: str | None, api_key: str | None, prompt_tokens: int, max_tokens: int,
    concurrency: int, runs: int, threads: int | None, say: Callable[[str], None],
) -> Report:
    say("loading")
    engine: _LocalChat | _HttpChat = _HttpChat(server, ref, api_key) if server else _LocalChat(str(ref), threads)
    prompt = make_prompt(engine.count_tokens, prompt_tokens)
    report = Report(
        engine.name, "chat", server or "in-process",
        {"prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "concurrency": concurrency,
         "runs": runs, "threads": threads},
    )
    say("warm-up")
    engine.request(prompt, 2)
    single: list[_Timed] = []
    for i in range(runs):
        say(f"single request, run {i + 1}/{runs}")
        single.append(engine.request(prompt, max_tokens))
    if not server:
        report.add("load_time", "s", [engine.load_seconds])
    report.add("ttft", "ms", [t.ttft * 1000 for t in single])
    report.add("prefill", "tok/s", [t.prompt_tokens / t.ttft for t in single if t.ttft > 0])
    report.add("decode", "tok/s", [t.decode_tps for t in single])
    report.add("completion_tokens", "tokens", [t.completion_tokens for t in single])
    if concurrency > 1:
        aggregate: list[float] = []
        per_stream: list[float] = []
        for i in range(runs):
            say(f"{concurrency} concurrent requests, run {i + 1}/{runs}")
            results: list[_Timed] = []
            errors: list[BaseException] = []

            def one() -> None:
                try:
                    results.append(engine.request(prompt, max_tokens))
                except BaseException as exc:  # reported below
                    errors.append(exc)

            workers = [threading.Thread(target=one) for _ in range(concurrency)]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            wall = time.perf_counter() - start
            if errors:
                raise errors[0]
            aggregate.append(sum(r.completion_tokens for r in results) / wall)
            per_stream.append(statistics.median(r.decode_tps for r in results))
        report.add(f"aggregate_x{concurrency}", "tok/s", aggregate)
        report.add(f"decode_per_stream_x{concurrency}", "tok/s", per_stream)
    if not server:
        report.add("peak_memory", "MB", [_peak_rss_mb()])
    return report


# --- embeddings -----------------------------------------------------------------------------


def bench_embed(
    ref: str | None,
    *,
    server: str | None = None,
    api_key: str | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32),
    sentences: int = 256,
    runs: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    if runs < 1 or sentences < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise InvalidRequest("runs, sentences and batch sizes must be >= 1")
    with _reaching(server):
        return _bench_embed(ref, server, api_key, batch_sizes, sentences, runs, threads,
                            progress or (lambda _text: None))


def _bench_embed(
    ref: str | None, server: str | None, api_key: str | None, batch_sizes: Sequence[int], sentences: int,
    runs: int, threads: int | None, say: Callable[[str], None],
) -> Report:
    texts = make_sentences(sentences)
    say("loading")
    if server:
        import httpx

        base = _v1(server)
        client = httpx.Client(headers={"Authorization": f"Bearer {api_key}"} if api_key else {}, timeout=600.0)
        name = ref or _first_model(client, base, "embedding")

        def call(batch: list[str]) -> None:
            reply = client.post(f"{base}/embeddings", json={"model": name, "input": batch, "encoding_format": "base64"})
            _raise_for(reply)

        load_seconds = None
    else:
        from onnxg.runtime.loading import load_embedding

        start = time.perf_counter()
        model = load_embedding(str(ref), threads=threads)
        load_seconds = time.perf_counter() - start
        name = model.name

        def call(batch: list[str]) -> None:
            model.embed(batch, batch_size=len(batch))

    report = Report(name, "embedding", server or "in-process",
                    {"batch_sizes": list(batch_sizes), "sentences": sentences, "runs": runs, "threads": threads})
    if load_seconds is not None:
        report.add("load_time", "s", [load_seconds])
    say("warm-up")
    call(texts[: max(batch_sizes)])
    for size in batch_sizes:
        rates: list[float] = []
        latencies: list[float] = []
        for i in range(runs):
            say(f"batch {size}, run {i + 1}/{runs}")
            start = time.perf_counter()
            for offset in range(0, len(texts), size):
                t0 = time.perf_counter()
                call(texts[offset: offset + size])
                latencies.append((time.perf_counter() - t0) * 1000)
            rates.append(len(texts) / (time.perf_counter() - start))
        ordered = sorted(latencies)
        report.add(f"sentences_per_s_b{size}", "sent/s", rates)
        report.add(f"latency_p50_b{size}", "ms", [ordered[len(ordered) // 2]])
        report.add(f"latency_p95_b{size}", "ms", [ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]])
    if not server:
        report.add("peak_memory", "MB", [_peak_rss_mb()])
    return report


def kind_of(ref: str) -> str:
    """'chat' or 'embedding' (what `bench_embed` measures) for a local model reference."""
    from onnxg.runtime import layout, store

    return "chat" if layout.inspect(store.resolve(ref)).kind == "chat" else "embedding"
