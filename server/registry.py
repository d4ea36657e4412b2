"""The models a server holds, by id. Loaded once at start-up, looked up per request.

The registry holds ``contracts.ChatModel`` and ``contracts.EmbeddingModel`` objects: models
loaded from folders (``plan`` + ``load``) or handed over already built (``Registry.of``: the
Python API and the fast tests' fakes). Lookup is by exact id in a dict, so a request's
``model`` is never used as a file path: ``../../etc/passwd`` is just an id we do not have.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable

from onnxg.runtime import layout, store
from onnxg.runtime.contracts import ChatModel, EmbeddingModel, Model
from onnxg.runtime.errors import InvalidRequest, ModelNotFound, OnnxgError

log = logging.getLogger("onnxg.server")


@dataclass
class Registry:
    chat: dict[str, ChatModel] = field(default_factory=dict)
    embedding: dict[str, EmbeddingModel] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def of(cls, models: Iterable[Model]) -> Registry:
        """A registry of models already built, each served under its ``name``."""
        registry = cls()
        for model in models:
            registry.add(model.name, model)
        return registry

    def add(self, model_id: str, model: Model) -> None:
        if model_id in self.chat or model_id in self.embedding:
            raise InvalidRequest(f"two models would be served as '{model_id}'",
                                 hint="serve each id once; rename one folder or use store names")
        if model.kind == "chat":
            self.chat[model_id] = model  # type: ignore[assignment]
        elif model.kind in ("embedding", "e2e"):
            self.embedding[model_id] = model  # type: ignore[assignment]
        else:
            raise InvalidRequest(f"'{model_id}' is a {model.kind!r} model, which onnxg does not serve")

    def get(self, model_id: str) -> Model | None:
        if model_id in self.chat:
            return self.chat[model_id]
        return self.embedding.get(model_id)

    def warmup(self) -> None:
        for model in [*self.chat.values(), *self.embedding.values()]:
            model.warmup()

    @property
    def ids(self) -> list[str]:
        return [*self.chat, *self.embedding]

    def chat_model(self, model_id: str) -> tuple[str, ChatModel]:
        """(id, chat model) for ``model_id``; an empty id means the first chat model served."""
        if not model_id and self.chat:
            model_id = next(iter(self.chat))
        if model_id in self.chat:
            return model_id, self.chat[model_id]
        if model_id in self.embedding:
            raise InvalidRequest(f"'{model_id}' is an embedding model: use /v1/embeddings", param="model")
        raise unknown_model(model_id, self.ids)

    def embedding_model(self, model_id: str) -> tuple[str, EmbeddingModel]:
        """(id, embedding model) for ``model_id``; an empty id means the first one served."""
        if not model_id and self.embedding:
            model_id = next(iter(self.embedding))
        if model_id in self.embedding:
            return model_id, self.embedding[model_id]
        if model_id in self.chat:
            raise InvalidRequest(f"'{model_id}' is a chat model: use /v1/chat/completions", param="model")
        raise unknown_model(model_id, self.ids)

    def close(self) -> None:
        for model_id, model in [*self.chat.items(), *self.embedding.items()]:
            try:
                model.close()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.warning("closing %s failed", model_id, exc_info=True)


def unknown_model(model_id: str, ids: list[str]) -> ModelNotFound:
    if not model_id:
        return ModelNotFound("No model of this kind is served; name one with 'model'.", param="model")
    shown = model_id if len(model_id) <= 200 else model_id[:200] + "..."
    return ModelNotFound(f"The model '{shown}' does not exist; served: {', '.join(ids)}", param="model")


@dataclass
class Planned:
    """A model to load: its folder, id and kind, checked before anything heavy happens."""

    path: Path
    id: str
    kind: str


def plan(refs: list[str]) -> list[Planned]:
    """Resolve every ref up front: a typo fails in a second, before any model loads."""
    if not refs:
        raise InvalidRequest("no model to serve", hint="pass --model NAME_OR_PATH (repeatable)")
    planned: list[Planned] = []
    seen: dict[str, str] = {}
    for ref in refs:
        path = store.resolve(ref)
        model_id = store.model_id(path)
        if model_id in seen:
            raise InvalidRequest(
                f"two models would be served as '{model_id}' ({seen[model_id]} and {ref})",
                hint="serve each id once; rename one folder or use store names",
            )
        seen[model_id] = ref
        planned.append(Planned(path, model_id, layout.inspect(path).kind or "?"))
    return planned


def load(planned: list[Planned], *, threads: int | None = None, warmup: bool = True,
         kv_cache_mb: int | None = None) -> Registry:
    """Load and warm every model (blocking: call it off the event loop)."""
    from onnxg.runtime.loading import load_model

    registry = Registry()
    try:
        for item in planned:
            started = time.perf_counter()
            model: Model = load_model(item.path, threads=threads, kv_cache_mb=kv_cache_mb)
            registry.add(item.id, model)
            if warmup:
                model.warmup()
            log.info("loaded %s (%s) in %.1fs", item.id, item.kind, time.perf_counter() - started)
    except OnnxgError:
        registry.close()
        raise
    except Exception as exc:
        registry.close()
        from onnxg.runtime.errors import ModelLoadError

        raise ModelLoadError(f"could not load {item.path}: {type(exc).__name__}: {exc}") from exc
    return registry
