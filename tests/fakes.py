"""Fake models for the fast test tier: the runtime's contracts without onnxruntime.

``FakeChatModel`` streams a scripted reply word by word and honours what the contract asks
(``max_tokens``, ``stop``, ``n``, ``seed``, ``logprobs``, the
context length, cancellation); ``FakeEmbeddingModel`` returns fixed vectors derived from the
text. Both are registered through the server's real registry (``create_app(settings,
models=[...])``) or handed to the Python API, so the HTTP layer, the CLI and the API are
tested in seconds. A prompt can ask for trouble on purpose:

- ``RAISE:<ErrorName>`` raises that ``onnxg.runtime.errors`` error before the first chunk
  (``RAISE:RuntimeError`` raises a plain RuntimeError: an internal crash);
- ``FAIL_AFTER:<k>`` streams k tokens, then raises a ``GenerationError``;
- ``THINK`` makes the reply start with reasoning text;
- ``CALL:<name>[,<name>...]`` makes the reply call those tools (when the request offers
  tools and tool_choice allows); ``tool_choice`` required or named always calls. The call is
  written in the generic family's syntax and read back by the runtime's own ``read_calls``,
  with arguments that are a small valid instance of the tool's schema;
- a ``response_format`` json_object/json_schema makes the reply such a JSON instance.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from onnxg.runtime import errors
from onnxg.runtime.contracts import (
    Chunk,
    EmbeddingResult,
    Message,
    Prompt,
    Result,
    TokenLogprob,
    Usage,
    collect,
)
from onnxg.runtime.layout import Kind
from onnxg.runtime.options import GenerationOptions
from onnxg.runtime.textstream import StopMatcher

SCRIPT = "Hello! I am a fake model. I answer every question with these same few words, one by one."
REASONING = "Let me think about it."


def words(text: str) -> list[str]:
    """The fake tokenizer: words with their leading space ("Hello!", " I", " am", ...)."""
    return re.findall(r"\s*\S+", text)


def render(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    lines = []
    for item in prompt:
        role, content = (item.role, item.content) if isinstance(item, Message) else (item["role"], item["content"])
        lines.append(f"<{role}> {content}")
    if not lines:
        raise errors.InvalidRequest("messages must not be empty", param="messages")
    return "\n".join(lines) + "\n<assistant>"


def _error_class(name: str) -> type[BaseException]:
    found = getattr(errors, name, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    if name == "GenerationError":
        from onnxg.runtime.errors import GenerationError

        return GenerationError
    return RuntimeError


class FakeChatModel:
    kind: ClassVar[Kind] = "chat"

    def __init__(self, name: str = "fake-chat", *, script: str = SCRIPT, context_length: int = 256,
                 delay: float = 0.0) -> None:
        from onnxg.runtime.tools import FAMILIES

        self.tool_family = FAMILIES["generic"]
        self.name = name
        self.path: Path | None = None
        self.script = script
        self.context_length = context_length
        self.delay = delay  # seconds per token: lets a test cancel mid-stream
        self.started = 0  # generations begun
        self.active = 0  # generations running now
        self.cancelled = 0  # generations stopped before their end (cancel set, iterator closed)
        self.warmed = False
        self.closed = False
        self._lock = threading.Lock()

    # -- the contract -----------------------------------------------------------------------

    def stream(self, prompt: Prompt, options: GenerationOptions,
               cancel: threading.Event | None = None) -> Iterator[Chunk | Usage]:
        from onnxg.runtime.tools import prepare, read_calls

        if not isinstance(prompt, str):
            prompt, _ = prepare([m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in prompt],
                                options.tools if options.calls_tools else (), self.tool_family, False)
        items = self._stream(prompt, options, cancel)
        return read_calls(items, self.tool_family, options.n) if options.calls_tools else items

    def _stream(self, prompt: Prompt, options: GenerationOptions,
                cancel: threading.Event | None) -> Iterator[Chunk | Usage]:
        text = render(prompt)
        param = "prompt" if isinstance(prompt, str) else "messages"
        if not text.strip():
            raise errors.InvalidRequest("the prompt is empty", param=param)
        trouble = re.search(r"RAISE:(\w+)", text)
        if trouble:
            raise _error_class(trouble.group(1))(f"raised on request: {trouble.group(1)}")
        prompt_tokens = len(words(text))
        if prompt_tokens >= self.context_length:
            raise errors.ContextLengthExceeded(
                f"this model's maximum context length is {self.context_length} tokens, but the prompt has "
                f"{prompt_tokens} tokens", param=param)
        fail = re.search(r"FAIL_AFTER:(\d+)", text)
        room = self.context_length - prompt_tokens
        limit = options.token_limit
        budget = room if limit is None else min(limit, room)
        structured = self._structured(text, options)
        replies = [[(t, False) for t in structured] if structured else self._reply(options, i, "THINK" in text)
                   for i in range(options.n)]
        return self._generate(replies, options, budget, prompt_tokens,
                              int(fail.group(1)) if fail else None, cancel or threading.Event())

    def complete(self, prompt: Prompt, options: GenerationOptions) -> Result:
        return collect(self.stream(prompt, options), options.n, logprobs=options.logprobs)

    def stats(self) -> dict[str, int]:
        return {}

    def warmup(self) -> None:
        self.warmed = True

    def close(self) -> None:
        self.closed = True

    # -- the script -------------------------------------------------------------------------

    def _structured(self, text: str, options: GenerationOptions) -> list[str] | None:
        """The reply's pieces when the request asks for a tool call or JSON, else None."""
        import json

        asked = re.search(r"CALL:([\w,.-]+)", text)
        choice = options.tool_choice
        if options.calls_tools and choice is not None and (choice.forced or asked):
            names = [choice.name] if choice.mode == "function" else asked.group(1).split(",") if asked else []
            tools = {t.name: t for t in options.tools}
            chosen = [tools[n] for n in names if n in tools] or [options.tools[0]]
            if not options.parallel_tool_calls:
                chosen = chosen[:1]
            written = self.tool_family.write([(t.name, json.dumps(instance(t.schema))) for t in chosen])
            return re.findall(r".{1,4}", written, flags=re.S)
        fmt = options.response_format
        if fmt is not None and fmt.type != "text":
            value = instance(fmt.schema_dict) if fmt.type == "json_schema" else {"answer": "Hello"}
            return re.findall(r".{1,4}", json.dumps(value), flags=re.S)
        return None

    def _reply(self, options: GenerationOptions, index: int, think: bool) -> list[tuple[str, bool]]:
        """(token, is_reasoning) pairs: the script as is when greedy, shuffled by the seed else."""
        tokens = words(self.script)
        if options.temperature > 0 and not options.top_k == 1:
            rng = np.random.default_rng(None if options.seed is None else [options.seed & 0xFFFFFFFF, index])
            tokens = [tokens[0], *rng.permutation(tokens[1:]).tolist()]
        pieces = [(t, False) for t in tokens]
        if think:
            pieces = [(t, True) for t in words(REASONING)] + pieces
        return pieces

    def _generate(self, replies: list[list[tuple[str, bool]]], options: GenerationOptions, budget: int,
                  prompt_tokens: int, fail_after: int | None, cancel: threading.Event) -> Iterator[Chunk | Usage]:
        with self._lock:
            self.started += 1
            self.active += 1
        stops = [StopMatcher(options.stop) for _ in replies]
        finished = [False] * len(replies)
        used = [0] * len(replies)
        emitted = 0
        completed = False
        try:
            for step in range(max(len(r) for r in replies) + 1):
                for index, reply in enumerate(replies):
                    if finished[index]:
                        continue
                    if cancel.is_set():
                        return
                    if fail_after is not None and emitted >= fail_after:
                        from onnxg.runtime.errors import GenerationError

                        raise GenerationError("generation failed: the fake model was told to fail")
                    if step == len(reply):
                        finished[index] = True
                        tail = stops[index].flush()
                        yield Chunk(index=index, text=tail, finish_reason="stop")
                        continue
                    if used[index] >= budget:
                        finished[index] = True
                        yield Chunk(index=index, text=stops[index].flush(), finish_reason="length")
                        continue
                    if self.delay:
                        time.sleep(self.delay)
                    token, reasoning = reply[step]
                    used[index] += 1
                    emitted += 1
                    logprobs = self._logprobs(token, options) if options.logprobs else None
                    if reasoning:
                        yield Chunk(index=index, reasoning=token, logprobs=logprobs)
                        continue
                    text = stops[index].add(token)
                    if stops[index].stopped:
                        finished[index] = True
                        yield Chunk(index=index, text=text, logprobs=logprobs, finish_reason="stop")
                    elif text or logprobs:
                        yield Chunk(index=index, text=text, logprobs=logprobs)
                if all(finished):
                    break
            completed = True
            yield Usage(prompt_tokens=prompt_tokens, completion_tokens=sum(used))
        finally:
            with self._lock:
                self.active -= 1
                self.cancelled += not completed  # cancelled, closed early, or failed

    @staticmethod
    def _logprobs(token: str, options: GenerationOptions) -> list[TokenLogprob]:
        raw = token.encode()
        top = [TokenLogprob(token=f"alt{k}", logprob=-1.0 - k, bytes=list(f"alt{k}".encode()), top_logprobs=[])
               for k in range(options.top_logprobs)]
        return [TokenLogprob(token=token, logprob=-0.5, bytes=list(raw), top_logprobs=top)]


def instance(schema: dict) -> object:
    """A small value valid for a simple JSON schema (what the fake model "generates")."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return instance(schema[key][0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: instance(props[k]) for k in schema.get("required", list(props))}
    if kind == "array":
        return [instance(schema.get("items", {}))] * schema.get("minItems", 1)
    return {"string": "Paris", "integer": 3, "number": 1.5, "boolean": True, "null": None}[kind]


class FakeEmbeddingModel:
    kind: ClassVar[Kind] = "embedding"
    multi_vector = False

    def __init__(self, name: str = "fake-embed", *, dimensions: int = 8, max_length: int = 32,
                 truncate: bool = True) -> None:
        self.name = name
        self.path: Path | None = None
        self.dimensions = dimensions
        self.max_length = max_length
        self.truncate = truncate
        self.calls = 0
        self.warmed = False
        self.closed = False

    def vector(self, tokens: list[str] | list[int]) -> np.ndarray:
        """A unit vector that depends only on the (truncated) tokens."""
        digest = hashlib.sha256(repr(tokens).encode()).digest()
        seed = int.from_bytes(digest[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dimensions).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed(self, texts: list[str], *, batch_size: int = 32) -> EmbeddingResult:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise errors.InvalidRequest("input must be a list of strings", param="input")
        rows = [text.split() or [""] for text in texts]
        return self._embed(rows)

    def embed_tokens(self, ids: list[list[int]], *, batch_size: int = 32) -> EmbeddingResult:
        for index, row in enumerate(ids):
            if not row or not all(isinstance(t, int) and t >= 0 for t in row):
                raise errors.InvalidRequest(f"input {index} must be a non-empty list of token ids", param="input")
        return self._embed([list(row) for row in ids])

    def _embed(self, rows: list[list]) -> EmbeddingResult:
        self.calls += 1
        kept = []
        for index, row in enumerate(rows):
            if len(row) > self.max_length:
                if not self.truncate:
                    raise errors.ContextLengthExceeded(
                        f"input {index} is longer than the model's maximum of {self.max_length} tokens",
                        param="input")
                row = row[:self.max_length]
            kept.append(row)
        vectors = np.stack([self.vector(r) for r in kept]) if kept else np.zeros((0, self.dimensions), np.float32)
        return EmbeddingResult(vectors=vectors, token_counts=[len(r) for r in kept])

    def warmup(self) -> None:
        self.warmed = True

    def close(self) -> None:
        self.closed = True
