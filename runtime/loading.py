"""Loading a model: the one place that turns a folder into a model object.

``load_model``, ``load_chat`` and ``load_embedding`` resolve a reference (a folder or a store name, see
``store.resolve``), ask ``layout.inspect`` what the folder holds and hand it to the runtime
of its kind: ``GenaiChatModel`` (chat), ``OnnxEmbeddingModel`` (embedding) or ``E2EModel``
(e2e). A folder the layout finds unusable fails here with the layout's own reason, the
same one ``onnxg check`` reports. ``open_session`` opens a folder's graph exactly as those
runtimes do (the checker uses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxg.runtime import layout, store
from onnxg.runtime.contracts import ChatModel, EmbeddingModel
from onnxg.runtime.errors import InvalidRequest, ModelLoadError


def load_model(ref: str | Path, *, threads: int | None = None, chat_template: str | None = None,
               kv_cache_mb: float | None = None, **embedding_options: Any) -> ChatModel | EmbeddingModel:
    """The model in ``ref``, whatever its kind; ``embedding_options`` go to ``load_embedding``."""
    folder = store.resolve(ref)
    if layout.inspect(folder).require() == "chat":
        return load_chat(folder, threads=threads, chat_template=chat_template, kv_cache_mb=kv_cache_mb)
    return load_embedding(folder, threads=threads, **embedding_options)


def load_chat(ref: str | Path, *, threads: int | None = None, chat_template: str | None = None,
              kv_cache_mb: float | None = None) -> ChatModel:
    """The chat model in ``ref``; an embedding folder is refused naming what it is."""
    folder = store.resolve(ref)
    kind = layout.inspect(folder).require()
    if kind != "chat":
        raise InvalidRequest(f"{folder.name} is an {kind} model, not a chat model",
                             hint="pass a chat model (`onnxg models` lists their kinds)", param="model")
    from onnxg.runtime.chat import GenaiChatModel

    return GenaiChatModel.load(folder, threads=threads, chat_template=chat_template, kv_cache_mb=kv_cache_mb)


def load_embedding(ref: str | Path, *, threads: int | None = None, pooling: str | None = None,
                   normalize: bool | None = None, max_length: int | None = None,
                   truncate: bool = True) -> EmbeddingModel:
    """The embedding model in ``ref``: over token ids, or end-to-end (a graph that takes strings)."""
    folder = store.resolve(ref)
    kind = layout.inspect(folder).require()
    options = {"threads": threads, "pooling": pooling, "normalize": normalize, "max_length": max_length,
               "truncate": truncate}
    if kind == "chat":
        raise InvalidRequest(f"{folder.name} is a chat model, not an embedding model",
                             hint="pass an embedding model (`onnxg models` lists their kinds)", param="model")
    if kind == "e2e":
        from onnxg.runtime.e2e import E2EModel

        return E2EModel.load(folder, **options)
    from onnxg.runtime.embed import OnnxEmbeddingModel

    return OnnxEmbeddingModel.load(folder, **options)


def open_session(found: layout.Layout, threads: int | None = 1) -> Any:
    """An onnxruntime session on the folder's graph, opened as its runtime opens it (string
    graphs with the extensions' custom ops); ModelLoadError if onnxruntime refuses it."""
    if found.graph is None:
        found.require()
        raise ModelLoadError(f"no ONNX graph found in {found.folder}", hint="check the folder with `onnxg check`")
    if any(i.elem_type == "string" for i in found.inputs):
        from onnxg.runtime.e2e import open_session as open_e2e

        return open_e2e(found.graph, threads)
    from onnxg.runtime.embed import open_session as open_embed

    return open_embed(found.graph, threads)
