"""The OpenAI wire format, as msgspec Structs.

Requests are decoded strictly (``"5"`` is not an int) and unknown fields are ignored, as
OpenAI's own clients send fields we have no use for (``user``, ``metadata``, ``store``, ...).
Fields we cannot honour but a client may send are declared loosely (``Any``) so the route can
reject them with a clear ``param`` instead of a type error. Response fields that OpenAI
always sends are declared without a default (so they are always encoded, ``null`` included);
optional ones default to ``UNSET`` and are left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# ---------------------------------------------------------------- requests

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]


class ContentPart(Struct):
    """One part of a message's content; only ``text`` parts can be served."""

    type: str
    text: str | None = None


class ChatMessage(Struct):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(Struct):
    include_usage: bool | None = None


class ResponseFormat(Struct):
    type: str


class _SamplingRequest(Struct, kw_only=True):
    """The sampling fields chat and legacy completions share."""

    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None


class ChatCompletionRequest(_SamplingRequest, kw_only=True):
    model: str = ""  # "" or absent: the first chat model served (as the original tool allowed)
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    logit_bias: dict[str, Any] | None = None


class CompletionRequest(_SamplingRequest, kw_only=True):
    model: str = ""
    prompt: str | list[Any] | None = None
    max_tokens: Annotated[int, Meta(ge=0)] | None = None
    best_of: Annotated[int, Meta(ge=0, le=20)] | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Any] | None = None


class EmbeddingRequest(Struct, kw_only=True):
    model: str = ""
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1)] | None = None


# ---------------------------------------------------------------- responses


class ErrorBody(Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Struct):
    error: ErrorBody


class Model(Struct, kw_only=True, omit_defaults=True):
    """OpenAI's model object, plus what onnxg knows of it (clients read them if they care)."""

    id: str
    object: str
    created: int
    owned_by: str
    kind: str | None = None
    """"chat", "embedding" or "e2e" (an embedding model that takes text only)."""
    context_length: int | None = None
    """Chat: the tokens of prompt + completion. Embeddings: the tokens (words for e2e) of one input."""
    dimensions: int | None = None
    """Embeddings: the width of one vector."""


class ModelList(Struct):
    object: str
    data: list[Model]


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Struct):
    content: list[TokenLogprob] | None
    refusal: None = None


class ResponseMessage(Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str | None
    refusal: str | None
    reasoning_content: str | None | UnsetType = UNSET


class ChatChoice(Struct):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: str


class ChatCompletion(Struct):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(Struct, omit_defaults=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET


class ChunkChoice(Struct):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(Struct, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None | UnsetType = UNSET


class LegacyLogprobs(Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(Struct):
    text: str
    index: int
    logprobs: LegacyLogprobs | None
    finish_reason: str | None


class Completion(Struct, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None | UnsetType = UNSET


class Embedding(Struct):
    object: str
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct):
    object: str
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Health(Struct):
    status: str
    models: list[str]


ENCODER = msgspec.json.Encoder()
