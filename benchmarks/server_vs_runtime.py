"""What the HTTP server costs: the runtime called directly vs the same models behind `onnxg serve`.

    python benchmarks/server_vs_runtime.py --chat PATH --embed PATH [--threads N] [--json]

Without --chat/--embed it uses the store's default models. Four figures, each a ratio
server / direct (targets: decode >= 0.95, embeddings through HTTP >= 0.95):

* streamed decode tokens/s of one greedy answer: (tokens - 1) / (time of last token - time
  of first token), through SSE with the official openai client vs ``GenaiChatModel.stream``;
* embeddings/s at batch 32: 32 sentences per call, through POST /v1/embeddings (base64, as
  the openai client asks) vs ``OnnxEmbeddingModel.embed``, twice: with plain HTTP (the
  standard library's http.client on one kept-alive connection, the base64 rows decoded with
  numpy: what the server costs) and with the official openai
  client (what a user of it sees: its response models and float lists cost ~5 ms a call
  on their own, on the client's side); and with plain HTTP again for 32 sentences of ~30
  tokens (``LONGER``): the server's cost per request is fixed, so its share shrinks as the
  model call grows.

Direct and served runs alternate (A B A B ...), never overlap, and each ratio is the median
of the paired runs, so a machine whose load drifts (a shared CI box) biases neither side.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
TOPICS = ["the sea", "a cat", "ONNX Runtime", "Paris", "rain", "mountains", "a quiet smile", "winter"]
SENTENCES = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(TOPICS * 4)]
# the same request with sentences of ~30 tokens, about the 1,000 of embed_vs_st.py's median: the
# server's cost per request is fixed, so its share depends on how long the model call is
LONGER = [f"{s} It was written on day {i} of the long and rainy winter, far from {TOPICS[i % 8 - 1]}, "
          f"by someone who had never read about {TOPICS[(i + 3) % 8]} before." for i, s in enumerate(SENTENCES)]
EMBED_CALLS = 20


def decode_rate(times: list[float]) -> float:
    """Tokens per second between the first and the last streamed token (one chunk per token)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def embed_rate(call: Callable[[], object], inputs: int = len(SENTENCES)) -> float:
    started = time.perf_counter()
    for _ in range(EMBED_CALLS):
        call()
    return EMBED_CALLS * inputs / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(chat: Path, embed: Path, threads: int | None) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "onnxg.cli.main", "serve", "--model", str(chat), "--model", str(embed)]
    command += ["--port", str(port), "--log-level", "warning"]
    if threads:
        command += ["--threads", str(threads)]
    log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server did not start; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)


def run(chat: Path, embed: Path, threads: int | None, max_tokens: int, repeat: int) -> dict[str, object]:
    import http.client as http_client

    import numpy as np
    from openai import OpenAI

    from onnxg.runtime.chat import GenaiChatModel

    from onnxg.runtime.contracts import Chunk, Message

    from onnxg.runtime.options import GenerationOptions
    from onnxg.runtime.embed import OnnxEmbeddingModel

    model = GenaiChatModel.load(chat, threads=threads)
    embedder = OnnxEmbeddingModel.load(embed, threads=threads)
    model.warmup()
    embedder.warmup()
    messages = [Message(**m) for m in PROMPT]
    proc, port = start_server(chat, embed, threads)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=300)

    def direct_decode() -> float:
        options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
        return decode_rate(
            [time.perf_counter() for i in model.stream(messages, options) if isinstance(i, Chunk) and i.text]
        )

    def served_decode() -> float:
        stream = client.chat.completions.create(
            model=chat.name, messages=PROMPT, max_tokens=max_tokens, temperature=0, stream=True
        )
        return decode_rate([time.perf_counter() for c in stream if c.choices and c.choices[0].delta.content])

    try:
        client.embeddings.create(model=embed.name, input=SENTENCES)  # warm the connection
        # the lightest client there is (the standard library's, one kept-alive connection), so
        # that what is measured is the server, not a client library (httpx costs ~0.3 ms more)
        http = http_client.HTTPConnection("127.0.0.1", port, timeout=300)
        short, longer = (json.dumps({"model": embed.name, "input": texts, "encoding_format": "base64"}).encode()
                         for texts in (SENTENCES, LONGER))

        def served_http(body: bytes) -> None:
            http.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            reply = http.getresponse()
            data = reply.read()
            assert reply.status == 200, data[:200]
            [np.frombuffer(base64.b64decode(row["embedding"]), "<f4") for row in json.loads(data)["data"]]

        pairs: dict[str, list[tuple[float, float]]] = {"decode": [], "embeddings": [], "embeddings_longer": [],
                                                      "embeddings_openai": []}
        for _ in range(repeat):
            pairs["decode"].append((direct_decode(), served_decode()))
            pairs["embeddings"].append(
                (embed_rate(lambda: embedder.embed(SENTENCES, batch_size=32)),
                 embed_rate(lambda: served_http(short)))
            )
            pairs["embeddings_longer"].append(
                (embed_rate(lambda: embedder.embed(LONGER, batch_size=32)), embed_rate(lambda: served_http(longer)))
            )
            pairs["embeddings_openai"].append(
                (
                    embed_rate(lambda: embedder.embed(SENTENCES, batch_size=32)),
                    embed_rate(lambda: client.embeddings.create(model=embed.name, input=SENTENCES)),
                )
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        model.close()
    result: dict[str, object] = {"chat_model": chat.name, "embedding_model": embed.name, "repeat": repeat}
    for name, runs in pairs.items():
        result[name] = {
            "direct_per_s": [round(d, 1) for d, _ in runs],
            "server_per_s": [round(s, 1) for _, s in runs],
            "ratio": statistics.median(s / d for d, s in runs),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat", type=Path)
    parser.add_argument("--embed", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from onnxg.convert import defaults

    chat = defaults.resolve(args.chat) if args.chat else defaults.default_model("chat")
    embed = defaults.resolve(args.embed) if args.embed else defaults.default_model("embedding")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(chat, embed, args.threads, args.max_tokens, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, unit, target in (("decode", "tok/s", 0.95), ("embeddings", "emb/s", 0.95),
                               ("embeddings_longer", "emb/s", 0.95), ("embeddings_openai", "emb/s", None)):
        r = result[name]
        assert isinstance(r, dict)
        print(
            f"{name:17s} {unit}  direct {statistics.median(r['direct_per_s']):8.1f}  "
            f"server {statistics.median(r['server_per_s']):8.1f}  "
            f"ratio (median of pairs) {r['ratio']:.3f}" + (f"  (target >= {target})" if target else "")
        )


if __name__ == "__main__":
    main()
