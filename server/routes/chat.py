"""POST /v1/chat/completions: messages through the chat template, non-streamed or SSE."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, post
from msgspec import UNSET

from onnxg.server.errors import decode, invalid
from onnxg.server.protocol import (
    ENCODER,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    DeltaFunction,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    ResponseMessage,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from onnxg.server.services import Services
from onnxg.server.routes.common import FINGERPRINT, complete, new_id, now, sse, stream_response


def to_messages(items: list[ChatMessage]) -> list[Any]:
    from onnxg.runtime.contracts import Message

    messages: list[Any] = []
    for i, item in enumerate(items):
        role = "system" if item.role == "developer" else item.role
        content = item.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise invalid(
                        f"Only text content parts are supported, not '{part.type}'.",
                        param=f"messages[{i}].content[{j}].type",
                    )
                texts.append(part.text)
            content = "\n".join(texts)
        if content is None:
            if role != "assistant":
                raise invalid(f"A '{role}' message needs 'content'.", param=f"messages[{i}].content")
            content = ""
        if role == "function":  # legacy: the result of the assistant's function_call
            messages.append({"role": "tool", "content": content, "name": item.name,
                             "tool_call_id": _legacy_id(item.name)})
        elif role == "tool":
            messages.append({"role": "tool", "content": content, "tool_call_id": item.tool_call_id})
        elif role == "assistant" and (item.tool_calls or item.function_call):
            calls = item.tool_calls
            if not calls and isinstance(item.function_call, dict):
                calls = [{"id": _legacy_id(item.function_call.get("name")), "type": "function",
                          "function": item.function_call}]
            messages.append({"role": "assistant", "content": content or None, "tool_calls": calls})
        else:
            messages.append(Message(role=role, content=content))
    return messages


def _legacy_id(name: str | None) -> str:
    return f"call_{name}"


def to_tool_calls(calls: list[Any] | None) -> list[ToolCall] | Any:
    if not calls:
        return UNSET
    return [ToolCall(c.id, "function", FunctionCall(c.name, c.arguments)) for c in calls]


def to_delta_calls(deltas: list[Any] | None) -> list[DeltaToolCall] | Any:
    if not deltas:
        return UNSET
    out = []
    for d in deltas:
        if d.id is not None:
            out.append(DeltaToolCall(d.index, d.id, "function", DeltaFunction(d.name, d.arguments)))
        else:
            out.append(DeltaToolCall(d.index, function=DeltaFunction(arguments=d.arguments)))
    return out


def to_logprobs(items: list[Any] | None) -> ChoiceLogprobs | None:
    if items is None:
        return None
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=list(t.bytes),
                top_logprobs=[TopLogprob(x.token, x.logprob, list(x.bytes)) for x in t.top_logprobs],
            )
            for t in items
        ]
    )


class ChatFormat:
    """SSE chunks of ``chat.completion.chunk``."""

    def __init__(self, model: str, n: int, logprobs: bool) -> None:
        self.id = new_id("chatcmpl")
        self.created = now()
        self.model = model
        self.n = n
        self.logprobs = logprobs

    def _encode(self, choices: list[ChunkChoice], usage: Any = UNSET) -> bytes:
        chunk = ChatCompletionChunk(
            self.id, "chat.completion.chunk", self.created, self.model, FINGERPRINT, choices, usage
        )
        return sse(ENCODER.encode(chunk))

    def head(self) -> list[bytes]:
        return [self._encode([ChunkChoice(i, Delta(role="assistant", content=""), None, None)]) for i in range(self.n)]

    def chunk(self, chunk: Any, finish_reason: str | None) -> bytes | None:
        delta = Delta()
        if chunk.text:
            delta.content = chunk.text
        if chunk.reasoning:
            delta.reasoning_content = chunk.reasoning
        delta.tool_calls = to_delta_calls(chunk.tool_calls)
        logprobs = to_logprobs(chunk.logprobs) if self.logprobs and chunk.logprobs else None
        if (delta.content is UNSET and delta.reasoning_content is UNSET and delta.tool_calls is UNSET
                and finish_reason is None and logprobs is None):
            return None
        return self._encode([ChunkChoice(chunk.index, delta, logprobs, finish_reason)])

    def finish(self, index: int) -> bytes:
        return self._encode([ChunkChoice(index, Delta(), None, "stop")])

    def usage(self, usage: Usage) -> bytes:
        return self._encode([], usage)


def _choice(c: Any, logprobs: bool, legacy: bool) -> ChatChoice:
    """One non-streamed choice; content is null when the reply is only tool calls."""
    message = ResponseMessage(role="assistant", content=c.text if (c.text or not c.tool_calls) else None,
                              refusal=None, reasoning_content=c.reasoning if c.reasoning else UNSET)
    finish = c.finish_reason
    if legacy and c.tool_calls:  # the legacy functions API: one function_call
        first = c.tool_calls[0]
        message.function_call = FunctionCall(first.name, first.arguments)
        finish = "function_call" if finish == "tool_calls" else finish
    else:
        message.tool_calls = to_tool_calls(c.tool_calls)
    return ChatChoice(index=c.index, message=message, logprobs=to_logprobs(c.logprobs) if logprobs else None,
                      finish_reason=finish)


@post(
    "/chat/completions",
    status_code=200,
    operation_id="createChatCompletion",
    summary="Create a chat completion (OpenAI wire format; SSE when stream is true).",
    tags=["Chat"],
)
async def chat_completions(request: Request, services: Services) -> Response:
    registry, slots, metrics = services.registry, services.slots, services.metrics
    started = time.perf_counter()
    req: ChatCompletionRequest = decode(await request.body(), ChatCompletionRequest)
    opts = req.to_options()
    model_id, model = registry.chat_model(req.model)
    messages = to_messages(req.messages)
    if req.stream:
        return await stream_response(model, model_id, messages, opts, ChatFormat(model_id, opts.n, opts.logprobs),
                                     stream_options=req.stream_options, slots=slots, metrics=metrics, started=started)
    result, usage = await complete(request, model, model_id, messages, opts, slots=slots, metrics=metrics)
    choices = [_choice(c, opts.logprobs, req.legacy_functions) for c in result.choices]
    completion = ChatCompletion(new_id("chatcmpl"), "chat.completion", now(), model_id, FINGERPRINT, choices, usage)
    return Response(ENCODER.encode(completion), media_type="application/json", status_code=200)
