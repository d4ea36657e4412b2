"""Prometheus metrics in the text exposition format, without a client library.

Requests, errors, tokens in and out, time to first token and request latency histograms,
and requests in flight. ``Metrics`` is thread-safe; ``middleware`` counts every routed
request, and the error handler counts errors (unknown routes included).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.prompt_tokens: dict[tuple[str], int] = defaultdict(int)
        self.completion_tokens: dict[tuple[str], int] = defaultdict(int)
        self.latency: dict[tuple[str], Histogram] = {}
        self.ttft: dict[tuple[str], Histogram] = {}
        self.in_flight = 0

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(method, route, str(status))] += 1
            self.latency.setdefault((route,), Histogram(LATENCY_BUCKETS)).observe(seconds)

    def error(self, status: int, code: str | None) -> None:
        with self._lock:
            self.errors[(str(status), code or "")] += 1

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens[(model,)] += prompt
            self.completion_tokens[(model,)] += completion

    def first_token(self, model: str, seconds: float) -> None:
        with self._lock:
            self.ttft.setdefault((model,), Histogram(TTFT_BUCKETS)).observe(seconds)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            self._counter(
                lines, "onnxg_requests_total", "HTTP requests answered.", ("method", "route", "status"), self.requests
            )
            self._counter(lines, "onnxg_errors_total", "Error responses sent.", ("status", "code"), self.errors)
            self._counter(
                lines,
                "onnxg_prompt_tokens_total",
                "Tokens read (prompts and embedding inputs).",
                ("model",),
                self.prompt_tokens,
            )
            self._counter(
                lines, "onnxg_completion_tokens_total", "Tokens generated.", ("model",), self.completion_tokens
            )
            self._histogram(
                lines,
                "onnxg_time_to_first_token_seconds",
                "Time from request to first streamed token.",
                ("model",),
                self.ttft,
            )
            self._histogram(
                lines,
                "onnxg_request_duration_seconds",
                "Request latency, until the last byte.",
                ("route",),
                self.latency,
            )
            lines += [
                "# HELP onnxg_requests_in_flight Requests being answered now.",
                "# TYPE onnxg_requests_in_flight gauge",
                f"onnxg_requests_in_flight {self.in_flight}",
            ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _counter(lines: list[str], name: str, help_: str, names: tuple[str, ...], values: dict[Any, int]) -> None:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
        lines += [f"{name}{_labels(names, key)} {value}" for key, value in sorted(values.items())]

    @staticmethod
    def _histogram(
        lines: list[str], name: str, help_: str, names: tuple[str, ...], values: dict[Any, Histogram]
    ) -> None:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        for key, hist in sorted(values.items()):
            cumulative = 0
            for bound, count in zip(hist.buckets, hist.counts[:-1], strict=True):
                cumulative += count
                le = 'le="' + str(bound) + '"'
                lines.append(f"{name}_bucket{_labels(names, key, le)} {cumulative}")
            le = 'le="+Inf"'
            lines.append(f"{name}_bucket{_labels(names, key, le)} {hist.count}")
            lines.append(f"{name}_sum{_labels(names, key)} {hist.sum:.6f}")
            lines.append(f"{name}_count{_labels(names, key)} {hist.count}")


_GAUGES = {
    "kv_budget_bytes": "Key-value memory budget of the chat engine.",
    "kv_used_bytes": "Key-value memory held by running rows now.",
    "kv_peak_bytes": "Most key-value memory held at once (rows and prefix cache).",
    "prefix_cache_bytes": "Key-value memory kept for prefix reuse.",
    "prefix_cache_hit_tokens": "Prompt tokens copied from the prefix cache instead of computed.",
    "rows_running": "Rows (choices) in the running batch.",
    "rows_waiting": "Rows waiting for key-value memory.",
    "rows_preempted": "Rows freed to make room and recomputed later.",
}


def model_gauges(models: dict[str, Any]) -> str:
    """The chat engines' memory and queue figures (``GenaiChatModel.stats``), one gauge each."""
    stats = {name: model.stats() for name, model in models.items() if hasattr(model, "stats")}
    lines: list[str] = []
    for key, help_ in _GAUGES.items():
        values = [(name, s[key]) for name, s in stats.items() if key in s]
        if values:
            lines += [f"# HELP onnxg_{key} {help_}", f"# TYPE onnxg_{key} gauge"]
            lines += [f'onnxg_{key}{{model="{_escape(name)}"}} {value}' for name, value in values]
    return "\n".join(lines) + "\n" if lines else ""


def middleware(app: Any) -> Any:
    """ASGI middleware: in-flight gauge, request counts and latency (until the last byte)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        metrics: Metrics = scope["litestar_app"].state.metrics
        route = scope.get("path_template") or "unrouted"
        status = 500
        started = time.perf_counter()
        metrics.request_started()

        async def counting_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            metrics.request_done(scope["method"], route, status, time.perf_counter() - started)

    return wrapped
