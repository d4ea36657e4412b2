"""Continuous batching: aggregate completion tokens/s with N clients, onnxg serve vs llama-server.

Each client sends streamed chat requests one after another (staggered starts, 64 new tokens,
temperature 0) for ``--seconds``; the figure is all completion tokens received / wall time.
Both servers run on the same machine, with the same thread count, started together and loaded
in turn (which goes first alternates per client count), in one run; also reports peak RSS of
each server under the largest load and the machine's CPU flags and load.

    python benchmarks/continuous.py --model ~/.cache/onnxg-tests/models/smollm2-int4-cpu-... \\
        --llama-server /path/to/llama-server --gguf /path/to/SmolLM2.Q4_1.gguf --clients 1 4 8 16

Needs no test framework; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_request(url: str, model: str, max_tokens: int) -> int:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    tokens = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
    return tokens


def load(url: str, model: str, clients: int, seconds: float, max_tokens: int, pid: int) -> tuple[float, float]:
    total = [0] * clients
    stop = time.monotonic() + seconds
    peak = [rss_mb(pid)]

    def client(i: int) -> None:
        time.sleep(i * 0.25)  # staggered starts
        while time.monotonic() < stop:
            total[i] += one_request(url, model, max_tokens)

    def watch() -> None:
        while time.monotonic() < stop:
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)] + [threading.Thread(target=watch)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total) / (time.monotonic() - started), peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="onnxg chat model folder")
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--llama-server", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--kv-cache-mb", type=int, default=1024)
    args = parser.parse_args()

    servers = {"onnxg serve": [sys.executable, "-m", "onnxg.cli.main", "serve", "--model", str(args.model),
                               "--threads", str(args.threads), "--kv-cache-mb", str(args.kv_cache_mb),
                               "--log-level", "warning", "--port", "{port}"]}
    if args.llama_server and args.gguf:
        servers["llama-server"] = [str(args.llama_server), "-m", str(args.gguf), "-np", "16", "-t", str(args.threads),
                                   "-c", str(16 * 512), "--port", "{port}", "--log-disable"]
    load_before = os.getloadavg()
    procs: dict[str, tuple[subprocess.Popen, str, str]] = {}
    results: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in servers}
    try:
        for name, command in servers.items():  # both up at once; only one is loaded at a time
            port = free_port()
            proc = subprocess.Popen([c.replace("{port}", str(port)) for c in command],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}"
            procs[name] = (proc, url, args.model.name if name == "onnxg serve" else "gguf")
            wait_ready(url, proc)
            one_request(url, procs[name][2], 8)  # warm
        for turn, clients in enumerate(args.clients):
            # alternate which server goes first, so a change in the machine's load hits both alike
            for name in (list(servers) if turn % 2 == 0 else list(servers)[::-1]):
                proc, url, model = procs[name]
                results[name][clients] = load(url, model, clients, args.seconds, args.max_tokens, proc.pid)
                print(name, clients, results[name][clients], file=sys.stderr, flush=True)
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
            proc.wait(30)
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "avx512f", "avx512_vnni")})
    print(f"CPU flags: {' '.join(flags)}; load average before/after: {load_before} / {os.getloadavg()}")
    names = list(results)
    print("| clients | " + " | ".join(f"{n} tok/s" for n in names) + (" | ratio |" if len(names) == 2 else " |"))
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for c in args.clients:
        cells = [f"{results[n][c][0]:.1f}" for n in names]
        ratio = [f"{results[names[0]][c][0] / results[names[1]][c][0]:.2f}"] if len(names) == 2 else []
        print(f"| {c} | " + " | ".join(cells + ratio) + " |")
    for n in names:
        print(f"peak RSS of {n} at {args.clients[-1]} clients: {results[n][args.clients[-1]][1]:.0f} MB")


if __name__ == "__main__":
    main()
