"""Every error the server sends, in OpenAI's shape: ``{"error": {message, type, param, code}}``.

The app registers ``handle`` for every exception, so invalid JSON, validation failures,
unknown routes (404), wrong methods (405), oversized bodies (413), runtime errors
(``OnnxgError``: context too long, unknown model, ...) and internal errors (500) all come out
the same way. Internal errors are logged with their traceback and answered with a generic
message: no C++ exception text or traceback reaches a client.

The runtime's errors say what went wrong (message, hint, param, code); ``STATUS`` here is the one
place that says which HTTP status and OpenAI error type each kind of error is answered with.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec

from onnxg.runtime.errors import (
    ContextLengthExceeded,
    ConversionError,
    GenerationError,
    InvalidRequest,
    KVBudgetExceeded,
    QueueFull,
    ModelLoadError,
    ModelNotFound,
    OnnxgError,
    ToolchainError,
)
from onnxg.server.protocol import ENCODER, ErrorBody, ErrorResponse

log = logging.getLogger("onnxg.server")


class APIError(Exception):
    """An error answered as OpenAI's error JSON, with optional extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return ErrorResponse(ErrorBody(self.message, self.type, self.param, self.code))

    def encode(self) -> bytes:
        return ENCODER.encode(self.body())


# (HTTP status, OpenAI error type) per runtime error class; an error takes the entry of the
# nearest class in its MRO, so a subclass defined elsewhere (a template error, a hub error)
# is answered as its family is. The OpenAI ``code`` is the error's own.
STATUS: dict[type[OnnxgError], tuple[int, str]] = {
    OnnxgError: (400, "invalid_request_error"),
    InvalidRequest: (400, "invalid_request_error"),
    ContextLengthExceeded: (400, "invalid_request_error"),
    KVBudgetExceeded: (400, "invalid_request_error"),
    QueueFull: (429, "requests"),
    ModelNotFound: (404, "invalid_request_error"),
    ModelLoadError: (500, "server_error"),
    GenerationError: (500, "server_error"),
    ConversionError: (500, "server_error"),
    ToolchainError: (500, "server_error"),
}


def from_onnxg(exc: OnnxgError) -> APIError:
    status, type_ = next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)
    message = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    headers = {"Retry-After": "1"} if status == 429 else None
    return APIError(status, message, type=type_, param=exc.param, code=exc.code, headers=headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unauthorized() -> APIError:
    return APIError(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer KEY'.",
        code="invalid_api_key",
    )


def busy(limit: int) -> APIError:
    return APIError(
        429,
        f"The server is at its concurrency limit ({limit} requests in flight); retry shortly.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": "1"},
    )


def client_gone() -> APIError:
    """A non-streamed request whose client left before the answer: nobody reads this (nginx's 499)."""
    return APIError(499, "The client closed the request before the answer was ready.", code="client_closed_request")


# ---------------------------------------------------------------- JSON bodies

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD = re.compile(r"required field `(?P<field>[^`]+)`")


def _param(message: str) -> tuple[str, str | None]:
    """msgspec's "Expected `int`, got `str` - at `$.n`" -> ("Expected `int`, got `str`", "n")."""
    path = ""
    match = _AT.search(message)
    if match:
        path = match.group("path")
        message = message[: match.start()]
    field = _FIELD.search(message)
    if field:
        path = f"{path}.{field.group('field')}"
    path = path.lstrip(".")
    return message, path or None


def decode(body: bytes, type_: type[Any]) -> Any:
    """A request body decoded into ``type_``, or a 400 naming the bad field."""
    if not body.strip():
        raise invalid("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        reason, param = _param(str(exc))
        if reason.startswith("Object missing required field"):
            raise invalid(f"Missing required parameter: '{param}'.", param=param) from None
        where = f"'{param}'" if param else "the request body"
        raise invalid(f"Invalid value for {where}: {reason}.", param=param) from None
    except msgspec.DecodeError as exc:
        raise invalid(
            f"We could not parse the JSON body of your request ({exc}). Send valid JSON.",
            code="invalid_json",
        ) from None


# ---------------------------------------------------------------- the app's handler


def to_api_error(request: Any, exc: Exception) -> APIError:
    """Any exception as an APIError; unknown ones are logged and become a plain 500."""
    from litestar.exceptions import HTTPException

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, OnnxgError):
        return from_onnxg(exc)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        where = f"{request.method} {request.url.path}"
        headers = dict(exc.headers or {})
        if status == 404:
            return APIError(404, f"Invalid URL ({where})", headers=headers)
        if status == 405:
            return APIError(405, f"Method not allowed ({where})", headers=headers)
        if status == 413:
            limit = request.route_handler.resolve_request_max_body_size() if _has_handler(request) else None
            size = f" (limit: {limit} bytes)" if limit else ""
            return APIError(413, f"Request body too large{size}.", code="request_too_large", headers=headers)
        if status < 500:
            return APIError(status, str(exc.detail), headers=headers)
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, "The server had an error while processing your request.", type="server_error")


def _has_handler(request: Any) -> bool:
    try:
        return request.route_handler is not None
    except Exception:  # noqa: BLE001 - no route resolved (raised by the router)
        return False


def handle(request: Any, exc: Exception) -> Any:
    """Litestar exception handler: every error as OpenAI's error JSON."""
    from litestar import Response

    error = to_api_error(request, exc)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.error(error.status, error.code)
    return Response(
        content=error.encode(),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def sse_error(exc: Exception) -> bytes:
    """An error after a stream began: a ``data:`` line holding an ``error`` object."""
    if isinstance(exc, OnnxgError):
        error = from_onnxg(exc)
    elif isinstance(exc, APIError):
        error = exc
    else:
        log.error("internal error while streaming", exc_info=exc)
        error = APIError(500, "The server had an error while generating; the stream was cut.", type="server_error")
    return b"data: " + error.encode() + b"\n\n"
