"""`onnxg bench`: the project's own llama-bench; the timing of a model, wherever it runs.

Every figure is measured ``runs`` times; the report keeps the median and the spread
(min, max). Chat: load time, time to first token, prefill and decode tokens/s at 1 and N
concurrent requests, peak memory. Embeddings: sentences/s and p50/p95 batch latency at
several batch sizes. What is measured is a *target*: a model loaded in this process
(``LocalChat``, ``LocalEmbedding``) or, for ``--server URL``, one behind HTTP
(``onnxg.service.client``: ``HttpChat``, ``HttpEmbedding``); this module does no HTTP.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


def _peak_rss_mb() -> float | None:
    try:
        import resource  # POSIX only
    except ImportError:  # Windows
        return None
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
class Timed:
    ttft: float
    total: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def decode_tps(self) -> float:
        span = self.total - self.ttft
        return (self.completion_tokens - 1) / span if self.completion_tokens > 1 and span > 0 else 0.0


def time_stream(items: Iterator[Any], usage_of: Callable[[Any], tuple[int, int] | None]) -> Timed:
    """Time a stream of pieces: the first non-usage item is the first token; ``usage_of``
    says which item carries the (prompt, completion) token counts."""
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
    return Timed(first if first is not None else total, total, usage[0], usage[1])


# --- targets ---------------------------------------------------------------------------------


class ChatTarget(Protocol):
    name: str
    target: str  # "in-process" or the server URL
    load_seconds: float | None  # None: loaded elsewhere (a server)

    def count_tokens(self, text: str) -> int: ...

    def request(self, prompt: str, max_tokens: int) -> Timed: ...


class EmbeddingTarget(Protocol):
    name: str
    target: str
    load_seconds: float | None

    def embed(self, batch: list[str]) -> None: ...


class LocalChat:
    """A chat model loaded in this process."""

    target = "in-process"

    def __init__(self, ref: str, threads: int | None = None) -> None:
        from onnxg.runtime.loading import load_chat

        start = time.perf_counter()
        self.model = load_chat(ref, threads=threads)
        self.load_seconds: float | None = time.perf_counter() - start
        self.name = self.model.name

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def request(self, prompt: str, max_tokens: int) -> Timed:
        from onnxg.runtime.contracts import Usage
        from onnxg.runtime.options import GenerationOptions

        options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
        return time_stream(
            self.model.stream(prompt, options),
            lambda item: (item.prompt_tokens, item.completion_tokens) if isinstance(item, Usage) else None,
        )


class LocalEmbedding:
    """An embedding model loaded in this process."""

    target = "in-process"

    def __init__(self, ref: str, threads: int | None = None) -> None:
        from onnxg.runtime.loading import load_embedding

        start = time.perf_counter()
        self.model = load_embedding(ref, threads=threads)
        self.load_seconds: float | None = time.perf_counter() - start
        self.name = self.model.name

    def embed(self, batch: list[str]) -> None:
        self.model.embed(batch, batch_size=len(batch))


# --- chat ---------------------------------------------------------------------------------


def bench_chat(
    engine: ChatTarget,
    *,
    prompt_tokens: int = 128,
    max_tokens: int = 64,
    concurrency: int = 4,
    runs: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Measure ``engine``; ``threads`` is only recorded in the settings (it was given at load)."""
    if runs < 1 or concurrency < 1 or prompt_tokens < 1 or max_tokens < 2:
        raise InvalidRequest("runs, concurrency and prompt length must be >= 1, output length >= 2")
    say = progress or (lambda _text: None)
    prompt = make_prompt(engine.count_tokens, prompt_tokens)
    report = Report(
        engine.name, "chat", engine.target,
        {"prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "concurrency": concurrency,
         "runs": runs, "threads": threads},
    )
    say("warm-up")
    engine.request(prompt, 2)
    single: list[Timed] = []
    for i in range(runs):
        say(f"single request, run {i + 1}/{runs}")
        single.append(engine.request(prompt, max_tokens))
    if engine.load_seconds is not None:
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
            results, wall = _concurrently(lambda: engine.request(prompt, max_tokens), concurrency)
            aggregate.append(sum(r.completion_tokens for r in results) / wall)
            per_stream.append(statistics.median(r.decode_tps for r in results))
        report.add(f"aggregate_x{concurrency}", "tok/s", aggregate)
        report.add(f"decode_per_stream_x{concurrency}", "tok/s", per_stream)
    _add_memory(report, engine)
    return report


def _concurrently(call: Callable[[], Timed], count: int) -> tuple[list[Timed], float]:
    """``count`` calls at once, in threads: their results and the wall time; the first error raised."""
    results: list[Timed] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(call())
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    workers = [threading.Thread(target=one) for _ in range(count)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return results, wall


def _add_memory(report: Report, engine: ChatTarget | EmbeddingTarget) -> None:
    peak = _peak_rss_mb() if engine.target == "in-process" else None
    if peak is not None:
        report.add("peak_memory", "MB", [peak])


# --- embeddings -----------------------------------------------------------------------------


def bench_embed(
    engine: EmbeddingTarget,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    sentences: int = 256,
    runs: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    if runs < 1 or sentences < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise InvalidRequest("runs, sentences and batch sizes must be >= 1")
    say = progress or (lambda _text: None)
    texts = make_sentences(sentences)
    report = Report(engine.name, "embedding", engine.target,
                    {"batch_sizes": list(batch_sizes), "sentences": sentences, "runs": runs, "threads": threads})
    if engine.load_seconds is not None:
        report.add("load_time", "s", [engine.load_seconds])
    say("warm-up")
    engine.embed(texts[: max(batch_sizes)])
    for size in batch_sizes:
        rates: list[float] = []
        latencies: list[float] = []
        for i in range(runs):
            say(f"batch {size}, run {i + 1}/{runs}")
            start = time.perf_counter()
            for offset in range(0, len(texts), size):
                t0 = time.perf_counter()
                engine.embed(texts[offset: offset + size])
                latencies.append((time.perf_counter() - t0) * 1000)
            rates.append(len(texts) / (time.perf_counter() - start))
        ordered = sorted(latencies)
        report.add(f"sentences_per_s_b{size}", "sent/s", rates)
        report.add(f"latency_p50_b{size}", "ms", [ordered[len(ordered) // 2]])
        report.add(f"latency_p95_b{size}", "ms", [ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]])
    _add_memory(report, engine)
    return report


def kind_of(ref: str) -> str:
    """'chat' or 'embedding' (what `bench_embed` measures) for a local model reference."""
    from onnxg.runtime import layout, store

    return "chat" if layout.inspect(store.resolve(ref)).kind == "chat" else "embedding"
