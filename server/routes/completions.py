"""POST /v1/completions: the legacy text endpoint (a raw prompt, no chat template)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, post

from onnxg.server.errors import decode, invalid
from onnxg.server.protocol import (
    ENCODER,
    Completion,
    CompletionChoice,
    CompletionRequest,
    LegacyLogprobs,
    Usage,
)
from onnxg.server.services import Services
from onnxg.server.routes.common import FINGERPRINT, complete, new_id, now, sse, stream_response

def prompt_text(prompt: str | list[Any] | None) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if prompt is None:
        raise invalid("'prompt' is required.", param="prompt")
    if prompt and all(isinstance(p, str) for p in prompt):
        raise invalid("One prompt per request: send several requests (they are batched).", param="prompt")
    raise invalid("'prompt' must be a string; token-id prompts are not supported.", param="prompt")


def legacy_logprobs(items: list[Any] | None, offset: int) -> LegacyLogprobs | None:
    if items is None:
        return None
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return LegacyLogprobs(
        tokens=[t.token for t in items],
        token_logprobs=[t.logprob for t in items],
        top_logprobs=[{x.token: x.logprob for x in t.top_logprobs} for t in items],
        text_offset=offsets,
    )


class CompletionFormat:
    """SSE chunks of ``text_completion``."""

    def __init__(self, model: str, n: int, echo: str, logprobs: bool) -> None:
        self.id = new_id("cmpl")
        self.created = now()
        self.model = model
        self.n = n
        self.echo = echo
        self.logprobs = logprobs
        self.offsets = [len(echo)] * n

    def _encode(self, choices: list[CompletionChoice], usage: Any = None) -> bytes:
        body = Completion(self.id, "text_completion", self.created, self.model, FINGERPRINT, choices)
        if usage is not None:
            body.usage = usage
        return sse(ENCODER.encode(body))

    def head(self) -> list[bytes]:
        if not self.echo:
            return []
        return [self._encode([CompletionChoice(self.echo, i, None, None)]) for i in range(self.n)]

    def chunk(self, chunk: Any, finish_reason: str | None) -> bytes | None:
        logprobs = None
        if self.logprobs and chunk.logprobs:
            logprobs = legacy_logprobs(chunk.logprobs, self.offsets[chunk.index])
        self.offsets[chunk.index] += len(chunk.text)
        if not chunk.text and finish_reason is None and logprobs is None:
            return None
        return self._encode([CompletionChoice(chunk.text, chunk.index, logprobs, finish_reason)])

    def finish(self, index: int) -> bytes:
        return self._encode([CompletionChoice("", index, None, "stop")])

    def usage(self, usage: Usage) -> bytes:
        return self._encode([], usage)


@post(
    "/completions",
    status_code=200,
    operation_id="createCompletion",
    summary="Create a text completion (legacy endpoint: raw prompt, no chat template).",
    tags=["Completions"],
)
async def completions(request: Request, services: Services) -> Response:
    registry, slots, metrics = services.registry, services.slots, services.metrics
    started = time.perf_counter()
    req: CompletionRequest = decode(await request.body(), CompletionRequest)
    opts = req.to_options()
    model_id, model = registry.chat_model(req.model)
    prompt = prompt_text(req.prompt)
    echo = prompt if req.echo else ""
    if req.stream:
        fmt = CompletionFormat(model_id, opts.n, echo, opts.logprobs)
        return await stream_response(model, model_id, prompt, opts, fmt,
                                     stream_options=req.stream_options, slots=slots, metrics=metrics, started=started)
    result, usage = await complete(request, model, model_id, prompt, opts, slots=slots, metrics=metrics)
    choices = [
        CompletionChoice(
            text=echo + c.text,
            index=c.index,
            logprobs=legacy_logprobs(c.logprobs, len(echo)) if opts.logprobs else None,
            finish_reason=c.finish_reason,
        )
        for c in result.choices
    ]
    body = Completion(new_id("cmpl"), "text_completion", now(), model_id, FINGERPRINT, choices, usage)
    return Response(ENCODER.encode(body), media_type="application/json", status_code=200)
