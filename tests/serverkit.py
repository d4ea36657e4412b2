"""Start a real ``onnxg serve`` process for end-to-end tests, and talk to it.

``ServerProcess`` runs the installed ``onnxg`` command (the same entry point a user runs) on
a free 127.0.0.1 port with a private ONNXG_HOME, waits until /health answers, and stops it
with SIGTERM (then SIGKILL). Its output goes to a log file that failures print.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def onnxg_command() -> list[str]:
    script = Path(sys.executable).parent / "onnxg"
    if script.exists():
        return [str(script)]
    found = shutil.which("onnxg")
    return [found] if found else [sys.executable, "-m", "onnxg.cli.main"]


class ServerProcess:
    def __init__(self, args: Sequence[str], home: Path, *, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.log_path = home / f"serve-{self.port}.log"
        inherited = {k: v for k, v in os.environ.items() if k != "ONNXG_API_KEY"}  # a key only when a test gives one
        self.env = {**inherited, "ONNXG_HOME": str(home), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self  # already started (e.g. `with ServerProcess(...).start()`)
        self.home.mkdir(parents=True, exist_ok=True)
        command = [*onnxg_command(), "serve", *self.args, "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"onnxg serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"onnxg serve did not answer /health within {timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


class AppServer:
    """The real app (``create_app``) under a real uvicorn, in a thread of the test process,
    serving models built in the test (the fast tier's fakes): real HTTP on a free 127.0.0.1
    port, and the test can look inside the models it handed over."""

    def __init__(self, models: Sequence[Any], **settings: Any) -> None:
        from onnxg.server.settings import Settings

        self.models = list(models)
        self.settings = Settings(port=free_port(), **settings)
        self.port = self.settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self._server: Any = None
        self._thread: Any = None

    def start(self, timeout: float = 30.0) -> AppServer:
        import threading

        import uvicorn

        from onnxg.server.app import create_app

        app = create_app(self.settings, models=self.models)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=self.settings.grace_period)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # a thread cannot take signals
        self._thread = threading.Thread(target=self._server.run, name="app-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the app server did not stop"
            self._server = None

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


def openai_client(server: ServerProcess | AppServer, api_key: str = "not-needed", **kwargs: Any) -> Any:
    """The official client, with retries off so errors are not hidden."""
    from openai import OpenAI

    return OpenAI(
        base_url=server.base_url, api_key=api_key, max_retries=0, timeout=kwargs.pop("timeout", 120), **kwargs
    )


def sse_lines(response: httpx.Response) -> Iterator[str]:
    """The ``data:`` payloads of an SSE response, as sent (``[DONE]`` included)."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: ") :]
        elif line.strip() and not line.startswith(":"):
            raise AssertionError(f"unexpected SSE line: {line!r}")


def stream_events(
    client: httpx.Client, path: str, body: dict[str, Any], **kwargs: Any
) -> tuple[list[dict[str, Any]], bool]:
    """POST a streaming request; (the JSON events, whether it ended with [DONE])."""
    events: list[dict[str, Any]] = []
    done = False
    with client.stream("POST", path, json=body, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for data in sse_lines(response):
            assert not done, "data after [DONE]"
            if data == "[DONE]":
                done = True
                continue
            events.append(json.loads(data))
    return events, done


def check_framing(events: list[dict[str, Any]], n: int, include_usage: bool) -> dict[int, str]:
    """All the SSE framing rules; returns each choice's text."""
    assert len({e["id"] for e in events}) == 1
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    texts: dict[int, str] = {}
    finishes: dict[int, int] = {}
    for event in events:
        for choice in event["choices"]:
            index = choice["index"]
            if index not in texts:
                assert choice["delta"].get("role") == "assistant", "the first delta of a choice carries the role"
                texts[index] = ""
            else:
                assert "role" not in choice["delta"]
            texts[index] += choice["delta"].get("content") or ""
            if choice["finish_reason"] is not None:
                assert choice["finish_reason"] in ("stop", "length")
                finishes[index] = finishes.get(index, 0) + 1
    assert sorted(texts) == list(range(n))
    assert finishes == {i: 1 for i in range(n)}, "exactly one finish_reason per choice"
    if include_usage:
        last = events[-1]
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
        assert all("usage" not in e or e["usage"] is None for e in events[:-1])
    else:
        assert all("usage" not in e for e in events)
    return texts


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of a response, checking its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# ---------------------------------------------------------------- OpenAI's spec

OPENAI_SPEC = Path(__file__).resolve().parents[2] / "shared" / "openai" / "openapi.yaml"
SPEC_OPERATIONS = {"/chat/completions": "post", "/embeddings": "post", "/models": "get"}


SPEC_SUBSET = Path(__file__).resolve().parent / "data" / "openai-spec-subset.json"


def openai_subset() -> Path:
    """OpenAI's spec cut down to the operations we fuzz and the schemas they reference (the
    whole 3 MB YAML takes ~10 s to parse), as JSON. The repo carries it in tests/data (made
    by ``python tests/serverkit.py`` from shared/openai/openapi.yaml), so CI needs no shared/."""
    if SPEC_SUBSET.is_file():
        return SPEC_SUBSET
    return build_openai_subset()


def build_openai_subset() -> Path:
    import yaml

    from modelkit import cache

    if not OPENAI_SPEC.is_file():
        raise FileNotFoundError(f"OpenAI's spec is not at {OPENAI_SPEC}")
    stat = OPENAI_SPEC.stat()
    target = cache.root() / f"openai-subset-{stat.st_size}-{int(stat.st_mtime)}.json"
    if target.is_file():
        return target
    spec = yaml.load(OPENAI_SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    paths = {p: {m: spec["paths"][p][m]} for p, m in SPEC_OPERATIONS.items()}
    components: dict[str, dict[str, Any]] = {}
    pending: list[Any] = [paths]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                _, _, section, name = ref.split("/", 3)
                if name not in components.setdefault(section, {}):
                    components[section][name] = spec["components"][section][name]
                    pending.append(components[section][name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    components["securitySchemes"] = spec["components"].get("securitySchemes", {})
    subset = {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": [{"url": "/v1"}],
        "paths": paths,
        "components": components,
    }
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(subset))
    partial.rename(target)
    return target


if __name__ == "__main__":  # refresh tests/data/openai-spec-subset.json from shared/openai/
    shutil.copyfile(build_openai_subset(), SPEC_SUBSET)
    print(SPEC_SUBSET)
