"""The HTTP client of onnxg's own API (``onnxg bench --server``): JSON calls, SSE streams, and
the chat and embedding bench targets that measure a running server.

Standard library only (``urllib.request``): the base install has no HTTP client library and
these few calls (JSON in and out, one server-sent event per line) need none. A connection
that fails is one ``OnnxgError`` naming the server; an error answer is one naming its status.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from onnxg.runtime.bench import Timed, time_stream
from onnxg.runtime.errors import OnnxgError

TIMEOUT_S = 600.0  # a long generation on a slow CPU
EMBEDDING_KINDS = ("embedding", "e2e")  # what `/v1/models` calls the models /v1/embeddings serves


def v1(url: str) -> str:
    """The server's OpenAI base URL: ``url`` with ``/v1`` appended unless it ends with it."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class Client:
    """Calls to one onnxg server (``url``: its root or its ``/v1`` base)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.url = url
        self.base = v1(url)
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _open(self, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.base}{path}", data=data, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise _answer_error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise OnnxgError(
                f"cannot reach an onnxg server at {self.url}",
                hint="start one with `onnxg serve --detach`, or check --server",
            ) from exc

    def get(self, path: str) -> Any:
        with self._open(path, None) as reply:
            return json.load(reply)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        with self._open(path, body) as reply:
            return json.load(reply)

    def events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The JSON events of a server-sent event stream, up to ``data: [DONE]``."""
        with self._open(path, body) as reply:
            for raw in reply:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return
                event = json.loads(line[6:])
                if "error" in event:
                    raise OnnxgError(f"server error: {event['error'].get('message')}")
                yield event

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: one entry per served model (``id``, and ``kind`` from onnxg)."""
        return list(self.get("/models").get("data", []))

    def kind_of(self, model: str) -> str | None:
        """The kind (``chat``, ``embedding``, ``e2e``) the server gives ``model``, if it says."""
        return next((m.get("kind") for m in self.models() if m.get("id") == model), None)

    def pick_model(self, kind: str) -> str:
        """The first served model of ``kind`` ("chat" or "embedding").

        A server that names no kinds (older onnxg): its only model, else an error asking for one.
        """
        models = self.models()
        if not models:
            raise OnnxgError("the server serves no model")
        wanted = EMBEDDING_KINDS if kind in EMBEDDING_KINDS else (kind,)
        ids = ", ".join(str(m.get("id")) for m in models)
        if any("kind" in m for m in models):
            found = [m["id"] for m in models if m.get("kind") in wanted]
            if found:
                return str(found[0])
            raise OnnxgError(f"the server serves no {kind} model (it serves {ids})", hint="pass --model ID")
        if len(models) == 1:
            return str(models[0]["id"])
        raise OnnxgError(f"the server does not say which of its models is a {kind} model ({ids})",
                         hint="pass --model ID")


def _answer_error(status: int, body: bytes) -> OnnxgError:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")[:200]
    return OnnxgError(f"server answered {status}: {message}")


# --- bench targets (see runtime.bench): the same figures, measured over HTTP -------------------


class HttpChat:
    """A chat model behind ``/v1/completions``, measured with streamed requests."""

    load_seconds: float | None = None  # loaded by the server, not here

    def __init__(self, client: Client, model: str | None) -> None:
        self.client = client
        self.target = client.url
        self.name = model or client.pick_model("chat")

    def count_tokens(self, text: str) -> int:
        # No tokenizer endpoint in the OpenAI API: ask for one token and read the usage.
        body = {"model": self.name, "prompt": text, "max_tokens": 1, "temperature": 0}
        return int(self.client.post("/completions", body)["usage"]["prompt_tokens"])

    def request(self, prompt: str, max_tokens: int) -> Timed:
        body = {
            "model": self.name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True},
        }
        events = (e for e in self.client.events("/completions", body) if e.get("choices") or e.get("usage"))

        def usage_of(event: dict[str, Any]) -> tuple[int, int] | None:
            if not event.get("choices") and event.get("usage"):
                return event["usage"]["prompt_tokens"], event["usage"]["completion_tokens"]
            return None

        return time_stream(events, usage_of)


class HttpEmbedding:
    """An embedding model behind ``/v1/embeddings`` (base64 vectors: the smallest answer)."""

    load_seconds: float | None = None

    def __init__(self, client: Client, model: str | None) -> None:
        self.client = client
        self.target = client.url
        self.name = model or client.pick_model("embedding")

    def embed(self, batch: list[str]) -> None:
        self.client.post("/embeddings", {"model": self.name, "input": batch, "encoding_format": "base64"})

