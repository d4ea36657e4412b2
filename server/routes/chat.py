"""POST /v1/chat/completions: messages through the chat template, non-streamed or SSE."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, post
from msgspec import UNSET

from onnxg.server.errors import decode, invalid
from onnxg.server.limits import Slots
from onnxg.server.metrics import Metrics
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
    ResponseMessage,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from onnxg.server.registry import Registry
from onnxg.server.routes.common import FINGERPRINT, complete, new_id, now, sse, stream_response


def to_messages(items: list[ChatMessage]) -> list[Any]:
    from onnxg.runtime.contracts import Message

    messages = []
    for i, item in enumerate(items):
        role = "system" if item.role == "developer" else item.role
        if role in ("tool", "function"):
            raise invalid(
                f"'{role}' messages are not supported (this server does no tool calling).", param=f"messages[{i}].role"
            )
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
        messages.append(Message(role=role, content=content))
    return messages


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
        logprobs = to_logprobs(chunk.logprobs) if self.logprobs and chunk.logprobs else None
        if delta.content is UNSET and delta.reasoning_content is UNSET and finish_reason is None and logprobs is None:
            return None
        return self._encode([ChunkChoice(chunk.index, delta, logprobs, finish_reason)])

    def finish(self, index: int) -> bytes:
        return self._encode([ChunkChoice(index, Delta(), None, "stop")])

    def usage(self, usage: Usage) -> bytes:
        return self._encode([], usage)


@post(
    "/chat/completions",
    status_code=200,
    operation_id="createChatCompletion",
    summary="Create a chat completion (OpenAI wire format; SSE when stream is true).",
    tags=["Chat"],
)
async def chat_completions(request: Request, registry: Registry, slots: Slots, metrics: Metrics) -> Response:
    started = time.perf_counter()
    req: ChatCompletionRequest = decode(await request.body(), ChatCompletionRequest)
    opts = req.to_options()
    model_id, model = registry.chat_model(req.model)
    messages = to_messages(req.messages)
    if req.stream:
        return await stream_response(model, model_id, messages, opts, ChatFormat(model_id, opts.n, opts.logprobs),
                                     stream_options=req.stream_options, slots=slots, metrics=metrics, started=started)
    result, usage = await complete(request, model, model_id, messages, opts, slots=slots, metrics=metrics)
    choices = [
        ChatChoice(
            index=c.index,
            message=ResponseMessage(
                role="assistant",
                content=c.text,
                refusal=None,
                reasoning_content=c.reasoning if c.reasoning else UNSET,
            ),
            logprobs=to_logprobs(c.logprobs) if opts.logprobs else None,
            finish_reason=c.finish_reason,
        )
        for c in result.choices
    ]
    completion = ChatCompletion(new_id("chatcmpl"), "chat.completion", now(), model_id, FINGERPRINT, choices, usage)
    return Response(ENCODER.encode(completion), media_type="application/json", status_code=200)
