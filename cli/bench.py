"""`onnxg bench`: load time, TTFT, prefill/decode tokens/s, sentences/s; median of runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, ModelArg, one_model, out, print_json, step
from onnxg.runtime.errors import InvalidRequest

HELP = """Benchmark a model: in-process, or through a running server with --server URL.

Chat models: load time, time to first token, prefill and decode tokens/s at 1 and N
concurrent requests, peak memory. Embedding models: sentences/s and p50/p95 latency per
batch size. Each figure is the median of --runs runs, with the spread."""


def register(app: typer.Typer) -> None:
    app.command("bench", help=HELP)(bench)


def bench(
    positional: ModelArg = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Store name, model folder or recipe (with --server: a served model id).")] = None,
    server: Annotated[str | None, typer.Option("--server", help="Measure through a running onnxg serve at this URL.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="ONNXG_API_KEY", help="API key for --server.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="chat or embedding (default: detected; with --server and no model: chat).")] = None,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", "-p", help="Prompt length in tokens (chat).")] = 128,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Tokens to generate per request (chat).")] = 64,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Concurrent requests for the aggregate figure (chat).")] = 4,
    batch_size: Annotated[list[int] | None, typer.Option("--batch-size", "-b", help="Batch sizes (embeddings; repeatable).")] = None,
    sentences: Annotated[int, typer.Option("--sentences", help="Sentences per measurement (embeddings).")] = 256,
    runs: Annotated[int, typer.Option("--runs", "-r", help="Runs per figure; the median is reported.")] = 3,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (in-process).")] = None,
    as_json: JsonOpt = False,
) -> None:
    from onnxg.runtime import bench as runtime_bench

    def progress(text: str) -> None:
        if not as_json:
            step(f"· {text}")

    ref = one_model(positional, model)
    if kind not in (None, "chat", "embedding", "embed"):
        raise InvalidRequest(f"unknown kind {kind!r}", hint="use --kind chat or --kind embedding", param="kind")
    # checked here, before a default model is resolved (and maybe converted)
    limits = [("--runs", runs, 1), ("--concurrency", concurrency, 1), ("--prompt-tokens", prompt_tokens, 1),
              ("--max-tokens", max_tokens, 2), ("--sentences", sentences, 1),
              *(("--batch-size", size, 1) for size in batch_size or ())]
    for flag, value, least in limits:
        if value < least:
            raise InvalidRequest(f"{flag} must be at least {least}, not {value}", param=flag[2:].replace("-", "_"))
    kind, engine = _http_target(server, api_key, ref, kind) if server else _local_target(ref, kind, threads, progress)
    if kind == "chat":
        report = runtime_bench.bench_chat(
            engine, prompt_tokens=prompt_tokens, max_tokens=max_tokens, concurrency=concurrency, runs=runs,
            threads=threads, progress=progress,
        )
    else:
        report = runtime_bench.bench_embed(
            engine, batch_sizes=tuple(batch_size or (1, 8, 32)), sentences=sentences, runs=runs, threads=threads,
            progress=progress,
        )
    if as_json:
        print_json(report.to_json())
        return
    from rich.table import Table

    table = Table(title=escape(f"{report.model} ({report.kind}, {report.target})"))
    for column in ("metric", "median", "min", "max", "unit", "runs"):
        table.add_column(column, justify="left" if column in ("metric", "unit") else "right")
    for metric in report.metrics:
        row = metric.to_json()
        table.add_row(row["name"], f"{row['median']:.2f}", f"{row['min']:.2f}", f"{row['max']:.2f}", row["unit"], str(row["runs"]))
    out.print(table)


def _local_target(
    ref: str | None, kind: str | None, threads: int | None, progress: Callable[[str], None]
) -> tuple[str, Any]:
    """The model loaded in this process: ``ref`` (a recipe converts on first use) or the default."""
    from onnxg.convert import defaults
    from onnxg.runtime import bench as runtime_bench

    if ref is None:
        folder = str(defaults.default_model("chat" if kind in (None, "chat") else "embedding", progress=progress))
    else:
        folder = str(defaults.resolve(ref, progress=progress))
    progress("loading")
    if (kind or runtime_bench.kind_of(folder)) == "chat":
        return "chat", runtime_bench.LocalChat(folder, threads)
    return "embedding", runtime_bench.LocalEmbedding(folder, threads)


def _http_target(server: str, api_key: str | None, ref: str | None, kind: str | None) -> tuple[str, Any]:
    """The model behind ``server``: ``ref`` or the first of ``kind`` it serves (its kind from /v1/models)."""
    from onnxg.service.client import EMBEDDING_KINDS, Client, HttpChat, HttpEmbedding

    client = Client(server, api_key)
    if kind is None:
        served = client.kind_of(ref) if ref else None
        kind = "embedding" if served in EMBEDDING_KINDS else "chat"
    if kind == "chat":
        return "chat", HttpChat(client, ref)
    return "embedding", HttpEmbedding(client, ref)
