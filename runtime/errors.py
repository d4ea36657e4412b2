"""The one error family of onnxg.

Every error a user can cause or fix is an ``OnnxgError``: what went wrong, and nothing about
HTTP. It has a one-line ``message``, an optional ``hint``, the ``param`` (an OpenAI field or
CLI option name) it is about, and a ``code`` naming the kind of failure
(``context_length_exceeded``). The CLI prints the message as one red line (plus the hint) and
exits 1; the server's ``server/errors.py`` alone decides each class's HTTP status and OpenAI
error type.
"""

from __future__ import annotations


class OnnxgError(Exception):
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


class KVBudgetExceeded(InvalidRequest):
    """A request that can never fit the server's key-value memory budget."""

    code = "kv_cache_exceeded"


class QueueFull(OnnxgError):
    """Too many requests wait for memory already; retry later."""

    code = "rate_limit_exceeded"


class ModelNotFound(OnnxgError):
    """No model (folder, store name or recipe) by that name."""

    code = "model_not_found"


class ModelLoadError(OnnxgError):
    """A folder that is not a model onnxg can load."""

    code = "model_load_error"


class ContextLengthExceeded(InvalidRequest):
    """A prompt longer than the model's context."""

    code = "context_length_exceeded"


class GenerationError(OnnxgError):
    """The model failed while generating (or was closed meanwhile)."""

    code = "generation_failed"


class ConversionError(OnnxgError):
    """A model that could not be converted to ONNX."""

    code = "conversion_failed"


class ToolchainError(OnnxgError):
    """A converter toolchain (its virtual environment or worker process) that failed."""

    code = "toolchain_failed"
