"""Per-request overhead and throughput: plain ``onnxg serve`` vs ``onnxg serve --ray`` (1 and 2 replicas).

    python benchmarks/ray_serve.py --chat-model PATH --embed-model PATH [--concurrency 16]
        [--requests 200] [--max-tokens 16] [--replica-cpus 1] [--threads N]

One run measures three servers one after the other, each started with the real CLI on a free
port (the Ray ones on a private local cluster the command starts) serving both models, and
stopped before the next, so the ratios compare within the run:

- overhead: p50/p90 latency of sequential ``GET /v1/models`` (no model work: the hop itself)
  and of a sequential short chat (``--short-tokens`` tokens);
- throughput: chat completions/s and embedding requests/s (one short input each) with
  ``--concurrency`` clients.

The CPU flags, core count and load average (before and after) are printed with the table: on
a shared machine the figures are only as good as the load average says.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

CHAT = [{"role": "user", "content": "Tell me a story."}]
SHORT = [{"role": "user", "content": "Hi"}]
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(models: list[str], extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "onnxg.cli.main", "serve", "--port", str(port), "--no-ui", *extra]
    for model in models:
        argv += ["-m", model]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            tail = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise SystemExit(f"server {extra} exited with {proc.returncode}:\n{tail}")
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"server {extra} did not start within 300 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def latencies(call: Callable[[], Any], count: int) -> dict[str, float]:
    for _ in range(min(10, count)):
        call()
    times = []
    for _ in range(count):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    times.sort()
    return {"p50": statistics.median(times) * 1000, "p90": times[int(0.9 * (len(times) - 1))] * 1000}


def rate(call: Callable[[], Any], requests: int, concurrency: int) -> float:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: call(), range(concurrency)))  # warm every client and the batcher
        t = time.perf_counter()
        list(pool.map(lambda _: call(), range(requests)))
        return requests / (time.perf_counter() - t)


def measure(url: str, chat_id: str, embed_id: str, args: argparse.Namespace) -> dict[str, Any]:
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=args.concurrency * 2))

    def get() -> None:
        client.get(f"{url}/v1/models").raise_for_status()

    def chat(messages: list[dict[str, str]], tokens: int) -> Callable[[], None]:
        body = {"model": chat_id, "messages": messages, "max_tokens": tokens, "temperature": 0}
        return lambda: client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()

    def embed() -> None:
        client.post(f"{url}/v1/embeddings", json={"model": embed_id, "input": [SENTENCE]}).raise_for_status()

    with client:
        return {"get": latencies(get, args.gets), "short": latencies(chat(SHORT, args.short_tokens), args.chats),
                "chat_rps": rate(chat(CHAT, args.max_tokens), args.requests, args.concurrency),
                "embed_rps": rate(embed, args.requests, args.concurrency)}


def machine() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        text = ""
    flags = sorted(set(re.findall(r"\b(avx512_vnni|avx512f|avx2)\b", text)))
    return f"{os.cpu_count()} logical CPUs, flags {' '.join(flags) or 'none of avx2/avx512f/avx512_vnni'}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chat-model", required=True)
    parser.add_argument("--embed-model", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200, help="per throughput measurement")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per chat in the throughput run")
    parser.add_argument("--short-tokens", type=int, default=4, help="tokens per sequential short chat")
    parser.add_argument("--gets", type=int, default=200, help="sequential GET /v1/models")
    parser.add_argument("--chats", type=int, default=50, help="sequential short chats")
    parser.add_argument("--replica-cpus", default="1", help="CPUs Ray reserves per replica")
    parser.add_argument("--threads", default=None, help="threads per model (every server; default: onnxg's)")
    parser.add_argument("--only", default="plain,ray x1,ray x2", help="comma-separated subset (a smoke run)")
    args = parser.parse_args()
    common = ["--threads", args.threads] if args.threads else []
    ray = ["--ray", "--replica-cpus", args.replica_cpus]
    configs = {"plain": common, "ray x1": [*common, *ray, "--replicas", "1"],
               "ray x2": [*common, *ray, "--replicas", "2"]}
    wanted = [name.strip() for name in args.only.split(",")]
    ids = [os.path.basename(os.path.normpath(m)) for m in (args.chat_model, args.embed_model)]
    print(f"# {machine()}; load average before: {load()}", flush=True)
    print(f"# concurrency {args.concurrency}, {args.requests} requests per throughput figure, chat max_tokens "
          f"{args.max_tokens}, short chat {args.short_tokens} tokens, --replica-cpus {args.replica_cpus}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in wanted:
        proc, url = start([args.chat_model, args.embed_model], configs[name])
        try:
            results[name] = measure(url, ids[0], ids[1], args)
        finally:
            stop(proc)
        r = results[name]
        print(f"{name:7s} GET p50/p90 {r['get']['p50']:6.2f}/{r['get']['p90']:6.2f} ms  short chat p50/p90 "
              f"{r['short']['p50']:7.1f}/{r['short']['p90']:7.1f} ms  chat {r['chat_rps']:6.1f} req/s  "
              f"embeddings {r['embed_rps']:7.1f} req/s   (load {load()})", flush=True)
    print(f"# load average after: {load()}")
    if "plain" in results:
        base = results["plain"]
        for name in (n for n in results if n != "plain"):
            r = results[name]
            print(f"{name}: GET +{r['get']['p50'] - base['get']['p50']:.2f} ms at p50, short chat "
                  f"+{r['short']['p50'] - base['short']['p50']:.1f} ms at p50; throughput x"
                  f"{r['chat_rps'] / base['chat_rps']:.2f} chat, x{r['embed_rps'] / base['embed_rps']:.2f} "
                  f"embeddings of plain")


if __name__ == "__main__":
    main()
