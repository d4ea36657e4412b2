"""``onnxg.chat(...)`` and ``onnxg.embed(...)``: the runtimes in-process, no server.

For scripts that want an answer or a vector without running a server. A model is loaded
once per folder (and load options) and kept for the life of the process; ``unload()``
frees them. A folder whose files changed since (a re-convert, a new pull) is loaded again. Both functions are thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from onnxg.runtime.errors import InvalidRequest

if TYPE_CHECKING:
    import numpy as np

    from onnxg.runtime.contracts import ChatModel, EmbeddingModel, Message

_lock = threading.Lock()
# (kind, folder, load options) -> (the folder's fingerprint when loaded, the model)
_models: dict[tuple[str, str, tuple[tuple[str, Any], ...]], tuple[str, Any]] = {}


def _resolve(ref: str | Path | None, kind: Literal["chat", "embedding"]) -> Path:
    from onnxg.convert import defaults

    if ref is not None:
        return Path(defaults.resolve(ref))
    return Path(defaults.default_model(kind))


def load_chat(model: str | Path | ChatModel | None = None, **load_options: Any) -> ChatModel:
    """The chat model for ``model`` (default: the default chat model), loaded once and cached;
    a model object (anything with the ``contracts.ChatModel`` shape) is used as it is."""
    if _is_model(model, "chat"):
        return model  # type: ignore[return-value]
    from onnxg.runtime import loading

    return _cached("chat", _resolve(model, "chat"), load_options, loading.load_chat)


def load_embedding(model: str | Path | EmbeddingModel | None = None, **load_options: Any) -> EmbeddingModel:
    """The embedding model for ``model`` (default: the default one), loaded once and cached;
    a model object (anything with the ``contracts.EmbeddingModel`` shape) is used as it is."""
    if _is_model(model, "embedding", "e2e"):
        return model  # type: ignore[return-value]
    from onnxg.runtime import loading

    return _cached("embedding", _resolve(model, "embedding"), load_options, loading.load_embedding)


def _is_model(model: object, *kinds: str) -> bool:
    """Whether ``model`` is a model object rather than a reference to one; the wrong kind is refused."""
    if model is None or isinstance(model, (str, Path)):
        return False
    kind = getattr(model, "kind", None)
    if kind not in kinds:
        raise InvalidRequest(f"model must be a name, a folder or a {kinds[0]} model object, not {model!r}",
                             param="model")
    return True


def _cached(kind: str, path: Path, options: Mapping[str, Any], load: Any) -> Any:
    from onnxg.runtime import store

    key = (kind, str(path.resolve()), tuple(sorted(options.items())))
    with _lock:  # loading twice in parallel would double the memory for nothing
        identity = store.fingerprint(path)
        cached = _models.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        # A changed folder: the stale model is dropped, not closed (a caller may still use it;
        # it is freed with its last reference).
        model = load(path, **options)
        _models[key] = (identity, model)
        return model


def unload() -> None:
    """Forget (and close) every cached model."""
    with _lock:
        models = [model for _, model in _models.values()]
        _models.clear()
    for model in models:
        model.close()


def _messages(prompt: str | Sequence[Message | Mapping[str, str]], system: str | None) -> list[Message]:
    from onnxg.runtime.contracts import Message

    if isinstance(prompt, str):
        items: list[Message] = [Message("user", prompt)]
    else:
        items = []
        for i, item in enumerate(prompt):
            if isinstance(item, Message):
                items.append(item)
            elif isinstance(item, Mapping) and "role" in item and "content" in item:
                items.append(Message(str(item["role"]), str(item["content"])))
            else:
                raise InvalidRequest(
                    f"message {i} must be a Message or a mapping with 'role' and 'content'",
                    param=f"messages[{i}]",
                )
    if system is not None:
        items.insert(0, Message("system", system))
    if not items:
        raise InvalidRequest("at least one message is needed", param="messages")
    return items


def _options(options: Mapping[str, Any]) -> Any:
    from onnxg.runtime.options import GenerationOptions

    return GenerationOptions.from_openai(**options)


@overload
def chat(
    prompt: str | Sequence[Message | Mapping[str, str]], *, model: str | Path | ChatModel | None = ...,
    system: str | None = ..., stream: Literal[False] = ..., **options: Any,
) -> str | list[dict[str, Any]]: ...
@overload
def chat(
    prompt: str | Sequence[Message | Mapping[str, str]], *, model: str | Path | ChatModel | None = ...,
    system: str | None = ..., stream: Literal[True], **options: Any,
) -> Iterator[str]: ...
def chat(
    prompt: str | Sequence[Message | Mapping[str, str]],
    *,
    model: str | Path | ChatModel | None = None,
    system: str | None = None,
    stream: bool = False,
    **options: Any,
) -> str | list[dict[str, Any]] | Iterator[str]:
    """Answer ``prompt`` (a user message, or a list of messages) with a chat model.

    ``options`` are the OpenAI names of ``GenerationOptions`` (``max_tokens``,
    ``temperature``, ``top_p``, ``top_k``, ``stop``, ``seed``, ``response_format``, ``tools``,
    ``tool_choice``, ...). Returns the answer text, or with ``stream=True`` an iterator of text
    pieces; a reply that calls tools (not streamed) returns the calls instead, as a list of
    ``{"id", "name", "arguments"}`` dicts with ``arguments`` parsed. Example::

        onnxg.chat("What is the capital of France?", temperature=0, max_tokens=32)
    """
    messages = _messages(prompt, system)
    opts = _options(options)
    if opts.n != 1:
        raise InvalidRequest("onnxg.chat returns one answer: n must be 1", param="n")
    engine = load_chat(model)
    if stream:
        return _pieces(engine, messages, opts)
    choice = engine.complete(messages, opts).choices[0]
    if choice.tool_calls:
        import json

        return [{"id": c.id, "name": c.name, "arguments": json.loads(c.arguments)} for c in choice.tool_calls]
    return choice.text


def _pieces(engine: ChatModel, messages: list[Message], opts: Any) -> Iterator[str]:
    from onnxg.runtime.contracts import Chunk

    stream = engine.stream(messages, opts)
    try:
        for item in stream:
            if isinstance(item, Chunk) and item.text:
                yield item.text
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # a caller that stops early frees the generator


@overload
def embed(texts: str, *, model: str | Path | EmbeddingModel | None = ..., dimensions: int | None = ...,
          batch_size: int = ...) -> np.ndarray: ...
@overload
def embed(texts: Sequence[str], *, model: str | Path | EmbeddingModel | None = ..., dimensions: int | None = ...,
          batch_size: int = ...) -> np.ndarray: ...
def embed(
    texts: str | Sequence[str],
    *,
    model: str | Path | EmbeddingModel | None = None,
    dimensions: int | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Embed one text (-> a float32 vector) or a list of texts (-> an ``[n, dim]`` array).

    ``dimensions`` keeps the first N dimensions and re-normalises, as OpenAI's parameter does.
    """
    import numpy as np

    from onnxg.runtime import pooling

    single = isinstance(texts, str)
    items = [texts] if single else list(texts) if isinstance(texts, Sequence) else []
    if not items or not all(isinstance(t, str) for t in items):
        raise InvalidRequest("texts must be a string or a non-empty list of strings", param="input")
    embedder = load_embedding(model)
    pooling.check_dimensions(dimensions, int(embedder.dimensions))  # before running the model
    result = embedder.embed(items, batch_size=batch_size)
    if isinstance(result.vectors, list):  # multi-vector models: one [tokens, dim] array per text
        return result.vectors[0] if single else result.vectors  # type: ignore[return-value]
    vectors = pooling.keep_dimensions(np.asarray(result.vectors, dtype=np.float32), dimensions)
    return vectors[0] if single else vectors
