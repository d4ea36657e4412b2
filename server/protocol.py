"""The OpenAI wire format, as msgspec Structs.

Requests are decoded strictly (``"5"`` is not an int) and unknown fields are ignored, as
OpenAI's own clients send fields we have no use for (``user``, ``metadata``, ``store``, ...).
Fields we cannot honour but a client may send are declared loosely (``Any``) so that
``to_options()`` can reject them with a clear ``param`` instead of a type error. The sampling
fields carry only their JSON types here: their ranges and cross-field rules are
``runtime/options.py``'s, checked once when a request converts itself with ``to_options()``
(the published JSON schema shows the ranges, taken from there). Response fields that OpenAI
always sends are declared without a default (so they are always encoded, ``null`` included);
optional ones default to ``UNSET`` and are left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from onnxg.runtime.errors import InvalidRequest
from onnxg.runtime.options import Bound, GenerationOptions, json_schema

# ---------------------------------------------------------------- requests

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
LEGACY_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
LEGACY_LOGPROBS = Bound(int, 0, 5)  # /v1/completions' logprobs: how many alternatives
BEST_OF = Bound(int, 0, 20)


def _ranged(name: str) -> Meta:
    """Documents option ``name``'s range in the JSON schema; the check is GenerationOptions'."""
    return Meta(extra_json_schema=json_schema(name))


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
    """The sampling fields chat and legacy completions share (GenerationOptions' names;
    None = OpenAI's default)."""

    temperature: Annotated[float, _ranged("temperature")] | None = None
    top_p: Annotated[float, _ranged("top_p")] | None = None
    top_k: Annotated[int, _ranged("top_k")] | None = None
    repetition_penalty: Annotated[float, _ranged("repetition_penalty")] | None = None
    presence_penalty: Annotated[float, _ranged("presence_penalty")] | None = None
    frequency_penalty: Annotated[float, _ranged("frequency_penalty")] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, _ranged("n")] | None = None
    logit_bias: dict[str, Any] | None = None

    def _sampling(self) -> dict[str, Any]:
        if self.logit_bias:
            raise InvalidRequest("'logit_bias' is not supported by this server.", param="logit_bias")
        return {name: getattr(self, name) for name in _SamplingRequest.__struct_fields__ if name != "logit_bias"}


class ChatCompletionRequest(_SamplingRequest, kw_only=True):
    model: str = ""  # "" or absent: the first chat model served (as the original tool allowed)
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_tokens: Annotated[int, _ranged("max_tokens")] | None = None
    max_completion_tokens: Annotated[int, _ranged("max_completion_tokens")] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, _ranged("top_logprobs")] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None

    def to_options(self) -> GenerationOptions:
        """The runtime's options for this request, or InvalidRequest naming the field."""
        if self.tools:
            raise InvalidRequest("'tools' are not supported by this server.", param="tools")
        if self.functions:
            raise InvalidRequest("'functions' are not supported by this server.", param="functions")
        if self.response_format is not None and self.response_format.type != "text":
            raise InvalidRequest(
                f"response_format '{self.response_format.type}' is not supported; only 'text'.",
                param="response_format",
            )
        return GenerationOptions.from_openai(
            **self._sampling(),
            max_tokens=self.max_tokens,
            max_completion_tokens=self.max_completion_tokens,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
        )


class CompletionRequest(_SamplingRequest, kw_only=True):
    model: str = ""
    prompt: str | list[Any] | None = None
    max_tokens: Annotated[int, _ranged("max_tokens")] | None = None
    best_of: Annotated[int, Meta(extra_json_schema=BEST_OF.json_schema())] | None = None
    logprobs: Annotated[int, Meta(extra_json_schema=LEGACY_LOGPROBS.json_schema())] | None = None
    echo: bool | None = None
    suffix: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    def to_options(self) -> GenerationOptions:
        """The runtime's options for this request: ``logprobs`` here is how many alternatives
        (0-5) to return with each token, which is chat's ``logprobs: true`` + ``top_logprobs``."""
        if self.suffix:
            raise InvalidRequest("'suffix' is not supported by this server.", param="suffix")
        if self.best_of is not None:
            BEST_OF.check("best_of", self.best_of)
            if self.best_of not in (0, 1) and self.best_of != (self.n or 1):
                raise InvalidRequest("'best_of' is not supported (use n).", param="best_of")
        if self.logprobs is not None:
            LEGACY_LOGPROBS.check("logprobs", self.logprobs)
            if self.echo:
                raise InvalidRequest("'echo' with 'logprobs' is not supported (no prompt logprobs).", param="logprobs")
        return GenerationOptions.from_openai(
            **self._sampling(),
            max_tokens=LEGACY_MAX_TOKENS if self.max_tokens is None else self.max_tokens,
            logprobs=self.logprobs is not None,
            top_logprobs=self.logprobs,
        )


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


class PromptTokensDetails(Struct):
    cached_tokens: int = 0


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


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
