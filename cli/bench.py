"""`onnxg bench`: load time, TTFT, prefill/decode tokens/s, sentences/s; median of runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, out, step
from onnxg.runtime.errors import InvalidRequest

HELP = """Benchmark a model: in-process, or through a running server with --server URL.

Chat models: load time, time to first token, prefill and decode tokens/s at 1 and N
concurrent requests, peak memory. Embedding models: sentences/s and p50/p95 latency per
batch size. Each figure is the median of --runs runs, with the spread."""


def register(app: typer.Typer) -> None:
    app.command("bench", help=HELP)(bench)


def bench(
    model: Annotated[str | None, typer.Argument(help="Store name, model folder or recipe (with --server: a served model id).")] = None,
    server: Annotated[str | None, typer.Option("--server", help="Measure through a running onnxg serve at this URL.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="ONNXG_API_KEY", help="API key for --server.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="chat or embedding (default: detected; needed with --server and no MODEL).")] = None,
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

    if kind not in (None, "chat", "embedding", "embed"):
        raise InvalidRequest(f"unknown kind {kind!r}", hint="use --kind chat or --kind embedding", param="kind")
    # checked here, before a default model is resolved (and maybe converted)
    limits = [("--runs", runs, 1), ("--concurrency", concurrency, 1), ("--prompt-tokens", prompt_tokens, 1),
              ("--max-tokens", max_tokens, 2), ("--sentences", sentences, 1),
              *(("--batch-size", size, 1) for size in batch_size or ())]
    for flag, value, least in limits:
        if value < least:
            raise InvalidRequest(f"{flag} must be at least {least}, not {value}", param=flag[2:].replace("-", "_"))
    if server is None:
        from onnxg.convert import defaults

        if model is None:
            wanted = "embedding" if kind in ("embedding", "embed") else "chat"
            model = str(defaults.default_model(wanted, progress=progress))
        else:  # a recipe name converts on first use
            model = str(defaults.resolve(model, progress=progress))
    if kind is None:
        kind = "chat" if server else runtime_bench.kind_of(model)

    if kind == "chat":  # "embed" and "embedding" both mean embeddings
        report = runtime_bench.bench_chat(
            model, server=server, api_key=api_key, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
            concurrency=concurrency, runs=runs, threads=threads, progress=progress,
        )
    else:
        report = runtime_bench.bench_embed(
            model, server=server, api_key=api_key, batch_sizes=tuple(batch_size or (1, 8, 32)),
            sentences=sentences, runs=runs, threads=threads, progress=progress,
        )
    if as_json:
        out.print_json(json.dumps(report.to_json()))
        return
    from rich.table import Table

    table = Table(title=escape(f"{report.model} ({report.kind}, {report.target})"))
    for column in ("metric", "median", "min", "max", "unit", "runs"):
        table.add_column(column, justify="left" if column in ("metric", "unit") else "right")
    for metric in report.metrics:
        row = metric.to_json()
        table.add_row(row["name"], f"{row['median']:.2f}", f"{row['min']:.2f}", f"{row['max']:.2f}", row["unit"], str(row["runs"]))
    out.print(table)
