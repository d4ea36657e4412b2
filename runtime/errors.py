"""The one error family of onnxg.

Every error a user can cause or fix is an ``OnnxgError``: a one-line ``message`` and an
optional ``hint``. The CLI prints them as one red line (plus the hint) and exits 1; the
server maps them to OpenAI's error JSON through ``status``, ``type``, ``code`` and ``param``.
"""

from __future__ import annotations


class OnnxgError(Exception):
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, hint: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param


# What ONNX Runtime's C++ texts carry before the meaning: "[ONNXRuntimeError] : 1 : FAIL : ..."
_ORT_MARKERS = ("FAIL : ", "INVALID_ARGUMENT : ", "NO_SUCHFILE : ", "INVALID_GRAPH : ", "NOT_IMPLEMENTED : ")


def short_message(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc`` (its type name if empty), ONNX Runtime's prefix dropped,
    cut to ``limit`` characters: a library's error text fit for a one-line OnnxgError."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    for marker in _ORT_MARKERS:
        if marker in first:
            first = first.split(marker, 1)[1]
    return first[:limit]


class InvalidRequest(OnnxgError):
    """A request or option with a bad value."""


class ModelNotFound(OnnxgError):
    status = 404
    code = "model_not_found"


class ModelLoadError(OnnxgError):
    """A folder that is not a model onnxg can load."""

    status = 500
    type = "server_error"
    code = "model_load_error"


class ContextLengthExceeded(OnnxgError):
    code = "context_length_exceeded"


class ConversionError(OnnxgError):
    status = 500
    type = "server_error"
    code = "conversion_failed"


class ToolchainError(OnnxgError):
    status = 500
    type = "server_error"
    code = "toolchain_failed"
