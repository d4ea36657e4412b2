"""End-to-end embedding models: ONNX graphs that take raw strings and return vectors.

Such a graph (made by ``onnxg convert`` from a TensorFlow SavedModel with tf2onnx, e.g.
universal-sentence-encoder) tokenises inside itself with onnxruntime-extensions' string
ops, so there is no tokenizer file: ``E2EModel`` feeds strings, registers the extensions'
custom-op library (and onnxg's own Python op for TensorFlow's string hash, see
``farmhash.py``) and reads the embedding output named in ``model_io.json``.

Tokens are inside the graph and invisible from here, so lengths are counted in
whitespace-separated words: ``max_length`` caps the words fed in (truncated by default, or
``ContextLengthExceeded`` with ``truncate=False``) and ``token_counts`` reports words used.

It has the ``OnnxEmbeddingModel`` methods of docs/runtime-api.md; ``runtime/loading.py``
loads one of these for a folder whose graph takes strings (``layout.inspect``'s ``e2e``), and
the layout names its graph, text input and embedding output.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

from onnxg.runtime import layout, store
from onnxg.runtime.contracts import EmbeddingResult
from onnxg.runtime.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError, short_message
from onnxg.runtime.layout import Kind

log = logging.getLogger(__name__)

DEFAULT_MAX_WORDS = 2048


def extensions() -> Any:
    """onnxruntime-extensions' ``_ocos`` module (library path, Python-op API), loaded lightly.

    Why not ``import onnxruntime_extensions``: its ``__init__`` imports onnx and, through
    its tokenizer converters, torch and transformers whenever they are installed (measured:
    seconds, 24 s on a busy machine), none of which running a graph needs. The submodules
    are loaded under a stand-in package that is dropped again, so a later ordinary import
    runs the real ``__init__`` and reuses these very modules (one Python-op registry).
    """
    loaded = sys.modules.get("onnxruntime_extensions._ocos")
    if loaded is not None:
        return loaded
    if "onnxruntime_extensions" in sys.modules:
        return importlib.import_module("onnxruntime_extensions._ocos")
    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("this model needs onnxruntime-extensions, which is not installed",
                             hint="pip install onnxruntime-extensions")
    stand_in = types.ModuleType("onnxruntime_extensions")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["onnxruntime_extensions"] = stand_in
    try:
        return importlib.import_module("onnxruntime_extensions._ocos")
    finally:
        if sys.modules.get("onnxruntime_extensions") is stand_in:
            del sys.modules["onnxruntime_extensions"]


def session_options(threads: int | None = None) -> Any:
    """onnxruntime SessionOptions able to run string graphs (the extensions' custom ops)."""
    import onnxruntime as ort

    from onnxg.runtime import farmhash

    ocos = extensions()
    farmhash.register_onnx_ops(ocos)  # before the library is registered, which picks up Python ops
    options = ort.SessionOptions()
    options.register_custom_ops_library(ocos.get_library_path())
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def open_session(model_path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session on a string-input graph; ModelLoadError if it will not load."""
    import onnxruntime as ort

    from onnxg.runtime.embed import CPU_DISABLED_FUSIONS

    try:
        return ort.InferenceSession(str(model_path), session_options(threads), providers=["CPUExecutionProvider"],
                                    disabled_optimizers=CPU_DISABLED_FUSIONS)
    except ModelLoadError:
        raise
    except Exception as exc:  # onnxruntime raises its own C++-backed exception types
        log.debug("session failed for %s: %s", model_path, exc)
        raise ModelLoadError(f"onnxruntime cannot load {model_path.name}: {short_message(exc)}",
                             hint=f"run `onnxg check {model_path.parent}` to see what is missing") from None


def _words(text: str) -> list[str]:
    return text.split()


class E2EModel:
    """A string-in, vector-out ONNX model (thread-safe: onnxruntime sessions are): a
    ``contracts.EmbeddingModel`` whose lengths are counted in words."""

    kind: ClassVar[Kind] = "e2e"
    multi_vector = False

    def __init__(self, path: Path, session: Any, text_input: str, output: str, *,
                 normalize: bool, max_length: int, truncate: bool, rank: int) -> None:
        self.path = path
        self.name = store.model_id(path)
        self._session = session
        self._input = text_input
        self._output = output
        self._rank = rank
        self.normalize = normalize
        self.max_length = max_length
        self.truncate = truncate
        self.dimensions = 0

    @classmethod
    def load(cls, ref: str | Path, *, threads: int | None = None, pooling: str | None = None,
             normalize: bool | None = None, max_length: int | None = None,
             truncate: bool = True) -> E2EModel:
        folder = store.resolve(ref)
        found = layout.inspect(folder)
        if found.require() != "e2e":
            raise ModelLoadError(f"{folder.name} takes no string input: not an end-to-end model",
                                 hint="load it with onnxg.runtime.loading.load_model")
        assert found.graph is not None and found.text_input is not None and found.output is not None
        if pooling not in (None, "", "model"):
            raise InvalidRequest(f"pooling {pooling!r} does not apply to an end-to-end model",
                                 hint="its graph pools by itself; leave --pooling unset", param="pooling")
        if max_length is not None and max_length < 1:
            raise InvalidRequest("max_length must be at least 1", param="max_length")
        meta = found.meta
        session = open_session(found.graph, threads)
        text = next(i for i in found.inputs if i.name == found.text_input)
        model = cls(folder, session, found.text_input, found.output,
                    normalize=bool(normalize if normalize is not None else meta.get("normalize", False)),
                    max_length=int(max_length or meta.get("max_length") or DEFAULT_MAX_WORDS),
                    truncate=truncate, rank=len(text.shape) if text.shape is not None else 1)
        dims = meta.get("dimensions")
        model.dimensions = int(dims) if isinstance(dims, int) and dims > 0 else model._probe_dimensions()
        return model

    def _probe_dimensions(self) -> int:
        return int(self._run(["hello"]).shape[1])

    def _run(self, texts: list[str]) -> Any:
        import numpy as np

        batch = np.array(texts, dtype=object)
        if self._rank == 2:
            batch = batch.reshape(-1, 1)
        try:
            (out,) = self._session.run([self._output], {self._input: batch})
        except Exception as exc:  # onnxruntime's C++-backed errors
            log.warning("e2e model %s failed: %s", self.name, exc)
            raise ModelLoadError(f"the end-to-end model {self.name} failed on this input",
                                 hint=f"run `onnxg check --run {self.path}`") from None
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ModelLoadError(f"{self.name}'s output {self._output} has shape {list(out.shape)}, not [batch, dim]",
                                 hint=f"name the embedding output in {layout.META_FILE}")
        return out

    def _prepare(self, text: str) -> tuple[str, int]:
        words = _words(text)
        if len(words) <= self.max_length:
            return text, len(words)
        if not self.truncate:
            raise ContextLengthExceeded(
                f"an input has {len(words)} words, more than this model's maximum of {self.max_length}",
                hint="shorten it, or allow truncation", param="input")
        return " ".join(words[: self.max_length]), self.max_length

    def embed(self, texts: list[str], *, batch_size: int = 32) -> EmbeddingResult:
        import numpy as np

        from onnxg.runtime.pooling import normalize_rows

        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest("input must be a list of strings", param="input")
        if batch_size < 1:
            raise InvalidRequest("batch_size must be at least 1", param="batch_size")
        prepared = [self._prepare(t) for t in texts]
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        # Similar lengths together: the graph pads each batch to its longest input.
        order = sorted(range(len(texts)), key=lambda i: len(prepared[i][0]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out = self._run([prepared[i][0] for i in chunk])
            if out.shape[1] != self.dimensions:
                raise ModelLoadError(f"{self.name} returned {out.shape[1]} dimensions, expected {self.dimensions}")
            vectors[chunk] = out
        if self.normalize and len(texts):
            vectors = normalize_rows(vectors)
        return EmbeddingResult(vectors=vectors, token_counts=[count for _, count in prepared])

    def embed_tokens(self, ids: list[list[int]], *, batch_size: int = 32) -> EmbeddingResult:
        raise InvalidRequest(f"{self.name} is an end-to-end model: it takes text, not token ids",
                             hint="send the input as strings", param="input")

    def warmup(self) -> None:
        self._run(["warm up"])

    def close(self) -> None:
        """Nothing to free early: the session goes with the object."""
