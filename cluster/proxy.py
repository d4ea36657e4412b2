"""An ASGI middleware that runs inside Ray Serve's HTTP proxy, in front of every replica.

Replicas answer in OpenAI's error JSON themselves; the proxy does not: when no replica is up
yet or on a proxy timeout it answers plain text, and when a replica dies before answering it
sends nothing at all (uvicorn then writes a bare "Internal Server Error"). This middleware is
the outermost ASGI app uvicorn calls, so it sees every path: it rewrites any non-JSON error the
proxy sends, answers a proxy that raised or returned without a response, both as
``{"error": {message, type, param, code}}`` (``server.errors.APIError``), and guards Ray's own
``/-/routes`` with the API key like /v1. Ray loads it through
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=onnxg.cluster.proxy.middlewares``, which must be in
the environment of the cluster's nodes (``cluster.ray_session`` sets it for a local cluster).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# status -> (message, OpenAI type, code) for the proxy's own answers
PROXY_ERRORS: dict[int, tuple[str, str, str]] = {
    404: ("No onnxg app is deployed at this path.", "invalid_request_error", "not_found"),
    408: ("The request timed out in the cluster's proxy.", "server_error", "timeout"),
    429: ("Every replica is at its limit; retry shortly.", "requests", "rate_limit_exceeded"),
    500: ("A replica failed while answering; retry the request.", "server_error", "replica_failed"),
    503: ("No replica is ready to answer yet; retry shortly.", "server_error", "service_unavailable"),
}


def openai_error(status: int, text: str) -> bytes:
    """The proxy's plain-text answer ``text`` with ``status`` as OpenAI's error JSON."""
    from onnxg.server.errors import APIError

    message, type_, code = PROXY_ERRORS.get(status, (text.strip() or f"HTTP {status}",
                                                     "server_error" if status >= 500 else "invalid_request_error",
                                                     f"http_{status}"))
    return APIError(status, message, type=type_, code=code).encode()


def _header(headers: Any, name: bytes) -> bytes:
    for key, value in headers or ():
        if key.lower() == name:
            return bytes(value)
    return b""


def authorized(scope: Scope, key: str) -> bool:
    scheme, _sep, token = _header(scope.get("headers"), b"authorization").decode("latin1").partition(" ")
    given = hashlib.sha256(token.strip().encode()).digest()
    return hmac.compare_digest(given, hashlib.sha256(key.encode()).digest()) and scheme.lower() == "bearer"


class OpenAIErrors:
    """Rewrites plain-text error responses to OpenAI error JSON; guards ``/-/routes``."""

    def __init__(self, app: ASGIApp, api_key: str | None = None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if self.api_key and scope.get("path", "").startswith("/-/routes") and not authorized(scope, self.api_key):
            from onnxg.server.errors import unauthorized

            await _send(send, 401, unauthorized().encode())
            return
        held: Message | None = None
        forwarded = False  # whether a response start reached the client (held ones do not)
        body = bytearray()

        async def rewrite(message: Message) -> None:
            nonlocal held, forwarded
            if message["type"] == "http.response.start":
                kind = _header(message.get("headers"), b"content-type")
                if message["status"] >= 400 and not kind.startswith((b"application/json", b"text/event-stream")):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                extra = [(k, v) for k, v in held.get("headers", ()) if k.lower() == b"retry-after"]
                forwarded = True
                await _send(send, held["status"], openai_error(held["status"], body.decode("utf-8", "replace")),
                            extra)
                return
            forwarded = forwarded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, rewrite)
        except Exception:  # noqa: BLE001 - the proxy raised (a replica died): uvicorn would answer plain text
            if forwarded:
                raise
            await _send(send, 500, openai_error(500, ""))
            return
        if not forwarded:
            # Ray's proxy catches a replica's death before the answer began and returns without
            # sending anything (``send_http_response_on_exception`` answers only 408/429/503);
            # uvicorn then writes a bare plain-text 500. Answer in its place (or end a held error).
            status = held["status"] if held is not None else 500
            await _send(send, status, openai_error(status, body.decode("utf-8", "replace")))


async def _send(send: Any, status: int, body: bytes, extra: list[Any] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def middlewares() -> list[Any]:
    """The hook Ray Serve's proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(OpenAIErrors, api_key=os.environ.get("ONNXG_API_KEY") or None)]
