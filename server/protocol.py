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
    tool_calls: list[Any] | None = None  # assistant: the calls it made (checked by runtime/tools.py)
    tool_call_id: str | None = None  # tool: the call it answers
    function_call: Any = None  # legacy assistant call: {"name", "arguments"}


class StreamOptions(Struct):
    include_usage: bool | None = None


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
    response_format: Any = None  # {"type": "text" | "json_object" | "json_schema", ...}
    tools: list[Any] | None = None
    tool_choice: Any = None  # "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None  # legacy: tools without the {"type": "function"} wrapper
    function_call: Any = None  # legacy: "none" | "auto" | {"name"}

    @property
    def legacy_functions(self) -> bool:
        return bool(self.functions) and not self.tools

    def _tools(self) -> tuple[Any, Any]:
        """tools and tool_choice, the legacy functions/function_call mapped onto them."""
        if not self.functions:
            return self.tools, self.tool_choice
        if self.tools:
            raise InvalidRequest("Send either 'tools' or the legacy 'functions', not both.", param="functions")
        tools = [{"type": "function", "function": f} for f in self.functions]
        choice = self.function_call
        if isinstance(choice, dict):
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        return tools, choice

    def to_options(self) -> GenerationOptions:
        """The runtime's options for this request, or InvalidRequest naming the field."""
        tools, choice = self._tools()
        return GenerationOptions.from_openai(
            **self._sampling(),
            max_tokens=self.max_tokens,
            max_completion_tokens=self.max_completion_tokens,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            response_format=self.response_format,
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=self.parallel_tool_calls,
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
    tool_calls: str | None = None
    """Chat: the tool-call syntax of the model's family ("hermes", "llama3", "mistral", ...)."""
    structured_output: bool | None = None
    """Chat: ``response_format`` json_object / json_schema and tool calls are grammar-enforced."""


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


class FunctionCall(Struct):
    name: str
    arguments: str


class ToolCall(Struct):
    id: str
    type: str
    function: FunctionCall


class ResponseMessage(Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str | None
    refusal: str | None
    reasoning_content: str | None | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    function_call: FunctionCall | UnsetType = UNSET  # legacy functions requests


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


class DeltaFunction(Struct, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class DeltaToolCall(Struct, omit_defaults=True):
    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: DeltaFunction | UnsetType = UNSET


class Delta(Struct, omit_defaults=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[DeltaToolCall] | UnsetType = UNSET


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
