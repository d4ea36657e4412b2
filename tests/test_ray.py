"""onnxg on Ray: a real 2-node ``ray.cluster_utils.Cluster`` on 127.0.0.1 (``-m ray`` runs them alone).

``onnxg serve --ray --detach`` deploys two replicas of the tiny chat model through the real
CLI; the official ``openai`` client and raw HTTP talk to Serve's proxy. ``onnxg embed --ray``
of 100,000 lines is compared byte for byte with the single-process output.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import error_of, free_port, onnxg_command, sse_lines

pytestmark = [pytest.mark.ray, pytest.mark.model, pytest.mark.slow]

KEY = "ray-test-key"
USER = [{"role": "user", "content": "Say something long."}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A 2-node cluster (2 logical CPUs each); yields the environment its clients need."""
    import shutil

    from onnxg.cluster import ray_session

    saved = dict(os.environ)
    temp_dir = ray_session.short_temp_dir()
    ray_cluster = None
    try:  # whatever fails, the environment is given back (the API key must not reach later tests)
        os.environ.update(ray_session.local_env(KEY), RAY_TMPDIR=temp_dir)  # before `import ray`: read at import
        from ray.cluster_utils import Cluster

        node = {"num_cpus": 2, "object_store_memory": 100 * 2**20, "node_ip_address": "127.0.0.1"}
        ray_cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        ray_cluster.add_node(**node)
        ray_cluster.wait_for_nodes()
        env = {**os.environ, "ONNXG_HOME": str(tmp_path_factory.mktemp("home")), "PYTHONUNBUFFERED": "1"}
        yield {**env, "RAY_TEST_ADDRESS": ray_cluster.address}
    finally:
        if ray_cluster is not None:
            ray_cluster.shutdown()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _onnxg(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*onnxg_command(), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _chat_with_one_retry(url: str, model: str, **extra: Any) -> tuple[httpx.Response, int]:
    """The answer and how many retries it took (one at most, as the openai client does)."""
    outcome = ""
    for attempt in range(2):
        try:
            response = _chat(url, model, timeout=30, **extra)
        except httpx.TimeoutException:
            outcome = "timed out"
            continue
        if response.status_code == 200:
            return response, attempt
        outcome = f"{response.status_code} {response.text[:200]}"
    raise AssertionError(f"a request failed twice: {outcome}")


def test_autoscale_adds_a_replica_under_load_and_every_request_succeeds(cluster: dict[str, str],
                                                                         tiny_chat_model: Path) -> None:
    """``--autoscale 1:2`` starts on one replica; six clients that never pause keep more requests
    in flight than one replica's target, so Serve adds the second: both answer, nothing fails.

    Runs first in this file: Serve has one proxy per cluster, and stopping this deployment (Serve
    was not running before it) shuts Serve down, so the module's 2-replica deployment can start."""
    port = free_port()
    done = _onnxg(cluster, "serve", "--ray", "--detach", "--ray-address", cluster["RAY_TEST_ADDRESS"],
                  "--autoscale", "1:2", "--max-concurrency", "4", "--replica-cpus", "0.5", "--port", str(port),
                  "--api-key", KEY, "-m", str(tiny_chat_model), "--no-ui")
    assert done.returncode == 0, done.stderr[-3000:]
    url, model = f"http://127.0.0.1:{port}", tiny_chat_model.name
    stop = threading.Event()
    answered: dict[str, int] = {}
    retries: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            response, retried = _chat_with_one_retry(url, model, max_tokens=16)
            with lock:
                replica = response.headers["x-onnxg-replica"]
                answered[replica] = answered.get(replica, 0) + 1
                retries.append(retried)

    try:
        first, _ = _chat_with_one_retry(url, model)
        assert first.status_code == 200
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            clients = [pool.submit(client) for _ in range(6)]
            try:
                while not (len(answered) == 2 and min(answered.values()) >= 5):  # the new one really serves
                    assert not any(c.done() for c in clients), [c.exception() for c in clients if c.done()]
                    assert time.monotonic() - started < 90, f"no second replica after 90 s of load: {answered}"
                    time.sleep(0.2)
                scaled_after = time.monotonic() - started
            finally:
                stop.set()
            for c in clients:
                c.result()  # a request that failed twice fails the test here
        print(f"second replica answering {scaled_after:.1f} s into the load; {len(retries)} requests, "
              f"{sum(retries)} retried; per replica {sorted(answered.values())}")
        assert sum(retries) <= 1, retries
    finally:
        stop.set()
        stopped = _onnxg(cluster, "stop", "--port", str(port), timeout=120)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def deployed(cluster: dict[str, str], tiny_chat_model: Path) -> Iterator[dict[str, Any]]:
    """``onnxg serve --ray --detach`` with two replicas; stopped with ``onnxg stop``."""
    port = free_port()
    done = _onnxg(cluster, "serve", "--ray", "--detach", "--ray-address", cluster["RAY_TEST_ADDRESS"],
                  "--replicas", "2", "--replica-cpus", "0.5", "--port", str(port), "--api-key", KEY,
                  "-m", str(tiny_chat_model), "--no-ui")
    assert done.returncode == 0, done.stderr[-3000:]
    url = done.stdout.strip().splitlines()[-1]
    assert url == f"http://127.0.0.1:{port}"
    try:
        yield {"url": url, "port": port, "model": tiny_chat_model.name, "env": cluster}
    finally:
        stopped = _onnxg(cluster, "stop", "--port", str(port), timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _chat(url: str, model: str, timeout: float = 120, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": USER, "max_tokens": 8, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=_headers(), timeout=timeout)


def test_status_lists_the_deployment_and_the_key_guards_the_cluster(deployed: dict[str, Any]) -> None:
    listed = _onnxg(deployed["env"], "status", "--json")
    assert listed.returncode == 0, listed.stderr
    (record,) = [r for r in json.loads(listed.stdout) if r["port"] == deployed["port"]]
    assert record["origin"] == "ray"

    url = deployed["url"]
    assert httpx.get(f"{url}/health").status_code == 200
    for path in ("/v1/models", "/-/routes"):  # onnxg's routes and Ray's own
        refused = httpx.get(f"{url}{path}")
        assert refused.status_code == 401, path
        assert error_of(refused)["code"] == "invalid_api_key"
        assert httpx.get(f"{url}{path}", headers=_headers()).status_code == 200


def test_a_second_deployment_on_the_cluster_is_refused_and_the_first_keeps_serving(
        deployed: dict[str, Any], tiny_chat_model: Path) -> None:
    """Serve has one proxy address per cluster and onnxg one app name: a second ``serve --ray`` on
    the same cluster says so in one line (it would print a URL nothing answers, or replace the app)."""
    address = deployed["env"]["RAY_TEST_ADDRESS"]
    common = ["serve", "--ray", "--ray-address", address, "--replica-cpus", "0.5", "--api-key", KEY,
              "-m", str(tiny_chat_model), "--no-ui"]
    for port, message in ((free_port(), f"already listens on 127.0.0.1:{deployed['port']}"),
                          (deployed["port"], "an app named 'onnxg' already runs")):
        refused = _onnxg(deployed["env"], *common, "--port", str(port), timeout=120)
        assert refused.returncode == 1, refused.stderr[-2000:]
        errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0], refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr
    assert _chat(deployed["url"], deployed["model"]).status_code == 200
    bad = _onnxg(deployed["env"], "serve", "--ray", "--ray-address", "no-port-here", "-m", str(tiny_chat_model))
    assert bad.returncode == 1 and "cannot reach the Ray cluster at no-port-here" in bad.stderr, bad.stderr[-2000:]


def test_two_replicas_both_answer_through_the_openai_client(deployed: dict[str, Any]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{deployed['url']}/v1", api_key=KEY, max_retries=0, timeout=120)
    replicas = set()
    for _ in range(20):
        raw = client.chat.completions.with_raw_response.create(
            model=deployed["model"], messages=USER, max_tokens=4, temperature=0)
        assert raw.parse().choices[0].message.content is not None
        replicas.add(raw.headers["x-onnxg-replica"])
    assert len(replicas) == 2, replicas
    bad = client.with_options(max_retries=0)
    with pytest.raises(Exception) as caught:  # the replica's own OpenAI error passes through
        bad.chat.completions.create(model="no-such-model", messages=USER)
    assert getattr(caught.value, "status_code", None) == 404


def _in_flight(url: str, replica: str, attempts: int = 40) -> int | None:
    """The in-flight gauge of ``replica`` (the /metrics request itself counts 1), via the proxy."""
    for _ in range(attempts):
        response = httpx.get(f"{url}/metrics", timeout=30)
        if response.headers["x-onnxg-replica"] == replica:
            line = next(l for l in response.text.splitlines() if l.startswith("onnxg_requests_in_flight "))
            return int(line.split()[1])
    return None


def test_a_stream_passes_through_and_a_disconnect_cancels_it(deployed: dict[str, Any]) -> None:
    url, model = deployed["url"], deployed["model"]
    body = {"model": model, "messages": USER, "max_tokens": 1900, "temperature": 0, "stream": True}
    started = time.monotonic()
    with httpx.Client(timeout=300, headers=_headers()) as client:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [e for e in sse_lines(response)]
    full = time.monotonic() - started
    assert events[-1] == "[DONE]" and len(events) > 3  # chunk by chunk, not one buffered body
    tokens = sum(1 for e in events[:-1] if json.loads(e)["choices"] and json.loads(e)["choices"][0]["delta"].get("content"))

    with httpx.Client(timeout=300, headers=_headers()) as client:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            replica = response.headers["x-onnxg-replica"]
            lines = sse_lines(response)
            for _ in range(3):
                next(lines)
    left = time.monotonic()
    while _in_flight(url, replica) != 1:
        assert time.monotonic() - left < max(full / 2, 1.0), "the replica kept generating after the client left"
        time.sleep(0.1)
    assert tokens > 50, "the full stream was too short to tell a cancel from an end"


def test_a_replica_killed_under_load_costs_at_most_one_retry_and_is_replaced(deployed: dict[str, Any]) -> None:
    import ray

    url, model = deployed["url"], deployed["model"]
    before = {_chat(url, model).headers["x-onnxg-replica"] for _ in range(12)}
    assert len(before) == 2
    victim = sorted(before)[0]
    failures: list[httpx.Response] = []
    timeouts: list[int] = []
    lock = threading.Lock()
    kill_now = threading.Event()

    def one(i: int) -> int:
        if i == 10:
            kill_now.set()
        outcome = ""
        for attempt in range(2):  # one client retry, as the openai client does (after an error or its timeout)
            try:
                response = _chat(url, model, timeout=30, max_tokens=48)
            except httpx.TimeoutException:  # a request caught in the dead replica: the client gives up on it
                with lock:
                    timeouts.append(i)
                outcome = "timed out"
                continue
            if response.status_code == 200:
                return attempt
            with lock:
                failures.append(response)
            outcome = f"{response.status_code} {response.text[:200]}"
        raise AssertionError(f"request {i} failed twice: {outcome}")

    ray.init(address=deployed["env"]["RAY_TEST_ADDRESS"], namespace="serve", log_to_driver=False)
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(one, i) for i in range(60)]
            kill_now.wait(120)
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            retries = [f.result() for f in futures]
    finally:
        ray.shutdown()
    assert all(r <= 1 for r in retries)
    assert len(timeouts) <= 6, timeouts  # at most the requests in flight on the killed replica
    for response in failures:  # every failure a client sees is OpenAI error JSON, none Ray's plain text
        assert response.status_code >= 500, response.text[:200]
        assert response.headers.get("content-type", "").startswith("application/json"), response.text[:200]
        assert error_of(response)["type"] == "server_error"
    deadline = time.monotonic() + 120
    after: set[str] = set()
    while len(after - {victim}) < 2:
        assert time.monotonic() < deadline, f"no replacement replica: {after}"
        response = _chat(url, model, max_tokens=2)
        if response.status_code == 200:
            after.add(response.headers["x-onnxg-replica"])
    assert len(after - before) >= 1  # a new replica answers beside the survivor


def test_embed_on_ray_equals_the_single_process_output(cluster: dict[str, str], tiny_embed_model: Path,
                                                       tmp_path: Path) -> None:
    """100,000 lines: ``--ray --out x.npy`` and ``--ray --out DIR`` (killed after two shards, then
    resumed) both equal the single-process ``.npy`` bit for bit."""
    import numpy as np

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    source = tmp_path / "corpus.txt"
    with source.open("w", encoding="utf-8") as handle:
        for i in range(100_000):
            handle.write(" ".join(words[(i * 7 + k) % len(words)] for k in range(1 + i % 9)) + f" {i}\n")
            if i % 1000 == 0:
                handle.write("   \n")  # blank lines are skipped by both
    single, spread = tmp_path / "one.npy", tmp_path / "ray.npy"
    done = _onnxg(cluster, "embed", str(source), "-m", str(tiny_embed_model), "--out", str(single))
    assert done.returncode == 0, done.stderr[-2000:]
    on_ray = ["--ray", "--ray-address", cluster["RAY_TEST_ADDRESS"], "--workers", "2"]
    done = _onnxg(cluster, "embed", str(source), "-m", str(tiny_embed_model), "--out", str(spread), *on_ray)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "100000 inputs" in done.stderr
    assert spread.read_bytes() == single.read_bytes()

    folder = tmp_path / "parts"
    to_folder = [*onnxg_command(), "embed", str(source), "-m", str(tiny_embed_model), "--out", str(folder),
                 "--shard-rows", "20480", *on_ray]
    killed = _killed_after_shards(to_folder, cluster, folder / "manifest.json", 2)
    done = subprocess.run(to_folder, env=cluster, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{killed} of them resumed" in done.stderr and "100000 inputs" in done.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and [s["rows"] for s in manifest["shards"]] == [20480] * 4 + [18080]
    parts = np.concatenate([np.load(folder / s["file"]) for s in manifest["shards"]])
    assert parts.tobytes() == np.load(single).tobytes()


def _killed_after_shards(command: list[str], env: dict[str, str], manifest: Path, shards: int) -> int:
    """Run ``command`` and SIGKILL it once ``manifest`` lists ``shards`` shards: the rows it left."""
    import signal

    running = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= shards):
            assert running.poll() is None, running.stderr.read()[-2000:] if running.stderr else ""
            assert time.monotonic() < deadline, f"fewer than {shards} shards after 300 s"
            time.sleep(0.05)
    finally:
        running.send_signal(signal.SIGKILL)  # a crash: nothing of onnxg's cleanup runs
        running.communicate()
    left = json.loads(manifest.read_text())
    assert not left["complete"], "the run ended before the kill"
    return sum(s["rows"] for s in left["shards"])
