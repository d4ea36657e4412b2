"""What a served model is: the contracts between the runtime and everything that uses it.

The server, the CLI, the Python API and the benchmarks talk to models only through these
``Protocol``s and the plain data types beside them, so any object that has these attributes
and methods can be served: the onnxruntime-genai chat model (``runtime.chat``), the
ONNX Runtime embedding models (``runtime.embed``, ``runtime.e2e``) and the fakes of the fast
test tier (``tests/fakes.py``). Nothing here imports onnxruntime.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from onnxg.runtime.layout import Kind
from onnxg.runtime.options import GenerationOptions

if TYPE_CHECKING:
    from onnxg.runtime.tools import Family

# --- chat data -------------------------------------------------------------------------------


@dataclass
class Message:
    role: str
    content: str


Prompt = str | Sequence[Message | dict[str, Any]]
"""A raw prompt (legacy completions: special tokens allowed) or chat messages (templated)."""


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TokenLogprob]


@dataclass
class ToolCallDelta:
    """A piece of one tool call as it streams: the first carries ``id`` and ``name``, the
    later ones fragments of ``arguments`` (a JSON text once joined)."""

    index: int  # which call of the choice
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass
class Chunk:
    """A piece of one choice's output, as it streams."""

    index: int
    text: str = ""
    reasoning: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose key-value entries were reused (prefix cache)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Choice:
    index: int
    text: str
    reasoning: str | None
    finish_reason: str
    logprobs: list[TokenLogprob] | None
    tool_calls: list[ToolCall] | None = None


@dataclass
class Result:
    choices: list[Choice]
    usage: Usage


def collect(items: Iterator[Chunk | Usage], n: int, *, logprobs: bool) -> Result:
    """A whole ``Result`` from a chat model's stream (what ``complete`` returns)."""
    texts, reasoning = [""] * n, [""] * n
    probs: list[list[TokenLogprob] | None] = [[] if logprobs else None for _ in range(n)]
    finish = ["stop"] * n
    calls: list[list[ToolCall]] = [[] for _ in range(n)]
    usage = Usage(0, 0)
    for item in items:
        if isinstance(item, Usage):
            usage = item
            continue
        texts[item.index] += item.text
        reasoning[item.index] += item.reasoning
        row = probs[item.index]
        if item.logprobs and row is not None:
            row.extend(item.logprobs)
        if item.finish_reason:
            finish[item.index] = item.finish_reason
        for delta in item.tool_calls or ():
            if delta.id is not None:
                calls[item.index].append(ToolCall(delta.id, delta.name or "", ""))
            calls[item.index][delta.index].arguments += delta.arguments
    choices = [Choice(index=i, text=texts[i], reasoning=reasoning[i] or None, finish_reason=finish[i],
                      logprobs=probs[i], tool_calls=calls[i] or None) for i in range(n)]
    return Result(choices=choices, usage=usage)


# --- embedding data --------------------------------------------------------------------------


@dataclass
class EmbeddingResult:
    vectors: Any                # float32 [n, dim], or a list of [tokens, dim] (multi-vector)
    token_counts: list[int]     # tokens used per input, after truncation

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


# --- the contracts ---------------------------------------------------------------------------


@runtime_checkable
class ChatModel(Protocol):
    """A model that generates text from a prompt or chat messages.

    ``options`` are valid by construction (``GenerationOptions`` checks itself). ``stream``
    checks the prompt before it returns (empty, over the context: an ``OnnxgError`` before
    the first item), then yields the ``Chunk``s of all
    ``options.n`` choices interleaved, exactly one ``finish_reason`` per choice, then one
    ``Usage``. Setting ``cancel``, or closing the iterator, frees the generation at the
    next token. Both methods may be called from many threads at once.
    """

    kind: ClassVar[Kind]
    name: str
    path: Path | None
    context_length: int
    tool_family: Family | None  # how it writes tool calls (``runtime/tools.py``); None: no tools

    def stream(self, prompt: Prompt, options: GenerationOptions,
               cancel: threading.Event | None = None) -> Iterator[Chunk | Usage]: ...

    def complete(self, prompt: Prompt, options: GenerationOptions) -> Result: ...

    def stats(self) -> dict[str, int]:
        """The engine's figures (``kv_budget_bytes``, queue lengths...); may be empty."""
        ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """A model that turns texts (or token ids) into vectors, in input order.

    ``dimensions`` is the width of one vector; ``max_length`` the tokens (or, for an
    end-to-end model, words) one input may use; ``multi_vector`` models return one
    ``[tokens, dim]`` array per input. ``embed`` may be called from many threads at once.
    """

    kind: ClassVar[Kind]
    name: str
    path: Path | None
    dimensions: int
    max_length: int
    multi_vector: bool

    def embed(self, texts: list[str], *, batch_size: int = 32) -> EmbeddingResult: ...

    def embed_tokens(self, ids: list[list[int]], *, batch_size: int = 32) -> EmbeddingResult: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


Model = ChatModel | EmbeddingModel
