"""Per-request overhead and throughput: plain ``onnxg serve`` vs ``onnxg serve --ray`` (1 and 2 replicas).

    python benchmarks/ray_serve.py --model PATH [--requests 200] [--concurrency 16] [--max-tokens 16]

Each server is started with the real CLI on a free port (the Ray ones on a local cluster the
command starts), measured, and stopped before the next; all in one run, so the ratios compare.
Overhead: p50 latency of sequential GET /v1/models. Throughput: chat completions per second
with ``--concurrency`` clients.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(model: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onnxg.cli.main", "serve", "-m", model, "--port", str(port),
                             "--no-ui", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server {extra} exited with {proc.returncode}")
        time.sleep(0.5)
    raise SystemExit(f"server {extra} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(url: str, model: str, requests: int, concurrency: int, max_tokens: int) -> dict[str, float]:
    with httpx.Client(timeout=120) as client:
        for _ in range(10):
            client.get(f"{url}/v1/models")
        times = []
        for _ in range(100):
            t = time.perf_counter()
            client.get(f"{url}/v1/models").raise_for_status()
            times.append(time.perf_counter() - t)
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": max_tokens, "temperature": 0}

    def one(_: int) -> None:
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).raise_for_status()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm
        t = time.perf_counter()
        list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - t
    return {"p50_ms": statistics.median(times) * 1000, "rps": requests / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    model_id = os.path.basename(os.path.normpath(args.model))
    configs = {"plain": [], "ray x1": ["--ray", "--replicas", "1"], "ray x2": ["--ray", "--replicas", "2"]}
    results = {}
    for name, extra in configs.items():
        proc, url = start(args.model, extra)
        try:
            results[name] = measure(url, model_id, args.requests, args.concurrency, args.max_tokens)
        finally:
            stop(proc)
        print(f"{name:8s} p50 GET /v1/models {results[name]['p50_ms']:6.2f} ms   "
              f"chat {results[name]['rps']:6.1f} req/s", flush=True)
    base = results["plain"]
    for name in ("ray x1", "ray x2"):
        print(f"{name}: +{results[name]['p50_ms'] - base['p50_ms']:.2f} ms per request, "
              f"throughput x{results[name]['rps'] / base['rps']:.2f} of plain")


if __name__ == "__main__":
    main()
