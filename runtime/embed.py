"""Sentence embeddings on ONNX Runtime + tokenizers (no torch, no transformers).

A model folder holds ``model.onnx`` (fp32 or quantized, external data allowed), a
tokenizer (``tokenizer.json`` or a SentencePiece ``tokenizer.model``) and, usually,
sentence-transformers metadata saying how to pool. Inputs are tokenized together, sorted
by length and cut into batches so that each batch pads as little as possible; batches run
side by side when there are several (``BULK_SESSION_MAX_BYTES`` says how); the vectors come
back in input order. Which file is the graph, which output it reads and where the
tokenizer is are ``runtime/layout.py``'s to say; ``runtime/loading.py`` picks this runtime
or the end-to-end one (``runtime/e2e.py``) by the folder's kind.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from onnxg.runtime import embed_tokenizer, layout, store
from onnxg.runtime import pooling as pool_lib
from onnxg.runtime.contracts import EmbeddingResult
from onnxg.runtime.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError
from onnxg.runtime.layout import Kind
DEFAULT_MAX_LENGTH = 512
# models whose position table starts after the padding index (fairseq heritage)
_POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "longformer", "bart", "mbart")
# ONNX Runtime load-time fusions that make CPU inference slower: its SkipLayerNormalization
# kernel takes 2-4x the time of the Add + LayerNormalization it replaces (measured with
# ONNX Runtime 1.32 on AVX2; see convert/workers/optimum_export.py).
CPU_DISABLED_FUSIONS = ["SkipLayerNormFusion"]
# A call of several batches runs them side by side, one per thread, each on a one-thread
# session: no worker of ONNX Runtime waits between the encoder's many small kernels
# (all-MiniLM-L6-v2, 1,000 sentences, batch 32, 2 threads, quiet 2-core AVX-512 machine:
# int8 0.673 s against 0.817 s one batch at a time on a two-thread session, fp32 1.874 s
# against 1.929 s; the two-thread session shared by two batches: int8 0.733 s, fp32 2.088 s).
# A single input (the only request left as one call, ``BATCHING``; or a fixed-shape graph's
# one batch) keeps the session with every thread unless other calls are running (a busy
# server): then it goes to a worker too (4 callers, 20 batches of 32, int8: 1.67 s against
# 2.04 s all on the two-thread session, fp32 3.74 s against 4.02 s; a loaded machine). That
# second session holds its own packed copy of the weights, so only models up to this size get
# one; bigger ones run their batches one at a time.
BULK_SESSION_MAX_BYTES = 512 * 2**20
# A model call also stops growing once its widest activation (the feed-forward layer's, padded
# tokens x intermediate size x 4 bytes) would pass this, like TEI's token budget: a call whose
# activations stay in the core's cache runs faster per token than a bigger one (all-MiniLM-L6-v2
# int8, 1,000 sentences asked for at batch 32, 2 threads: 0.561 s at 256 tokens per call
# against 0.663 s with 32 inputs whatever their length; 0.578 s at 512, 0.579 s at 128).
# Graphs with a fixed batch or length keep whole batches.
ACTIVATION_BUDGET_BYTES = 256 * 1536 * 4
# Two or more inputs that would fill one or two calls make two, split where the padded tokens
# of both plus those of the bigger are least (what the two calls take on busy threads, plus what
# they take side by side on idle ones): two calls side by side beat one call on two threads, and
# sorted halves pad less even on one thread (all-MiniLM-L6-v2, 2-core AVX-512, ms per call of
# random 5-30-word sentences, int8 / fp32; two calls side by side, one call on two threads, two
# calls on one thread, one call on one thread): 8 inputs 6.7 / 19.0, 10.5 / 21.9, 9.3 / 29.9,
# 13.2 / 36.1; 16 inputs 13.9 / 44.0, 20.0 / 47.6, 23.4 / 74.0, 28.7 / 88.3. 32 short
# sentences that the budget alone cut 24 + 8: 10.5 ms as 16 + 16 against 13.0 ms (int8), the
# same padded tokens, so no loss when a busy server's calls fill every thread anyway (the most
# even cut, 18 + 14, padded 4% more and lost 5% at 4 concurrent callers). Longer requests fill
# their calls to the budget: with three calls or more every thread has work.
# The name of this rule (``_batches``), changed whenever it cuts calls differently: an
# input's vector depends slightly on its neighbours in a call (int8's dynamic quantization
# scales a call's activations together), so ``onnxg embed --out DIR`` records it and never
# resumes a folder with vectors cut by another rule.
BATCHING = "sorted; token budget; two calls at least, split at the least padding + bigger call"


def position_limit(folder: Path) -> int | None:
    """How many positions the model has (config.json), if it says."""
    config = store.read_json(folder / "config.json")
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.get("model_type") in _POSITION_OFFSET_TYPES:
        positions -= 2
    return positions


def model_max_length(folder: Path, st_max: int | None) -> int:
    """sentence-transformers' max_seq_length, else the tokenizer's or the config's limit.

    Never the truncation stored in ``tokenizer.json`` (all-MiniLM-L6-v2's says 128 while
    the model is used at 256).
    """
    if st_max:
        return st_max
    configured = store.read_json(folder / "tokenizer_config.json").get("model_max_length")
    limit = position_limit(folder)
    if isinstance(configured, int) and 0 < configured < 1_000_000:
        return min(configured, limit) if limit else configured
    return limit or DEFAULT_MAX_LENGTH


class OnnxEmbeddingModel:
    """An embedding model over token ids: a ``contracts.EmbeddingModel``."""

    kind: ClassVar[Kind] = "embedding"

    def __init__(self, path: Path, session: Any, tok: embed_tokenizer.Tokenizer, *, output: str, token_states: bool,
                 modes: tuple[str, ...], normalize: bool, truncate: bool, dimensions: int | None,
                 fixed_batch: int | None, fixed_length: int | None, bulk: tuple[Any, int] | None = None) -> None:
        self.path = path
        self.name = store.model_id(path)
        self.max_length = tok.max_length
        self.pooling = "+".join(modes)
        self.normalize = normalize
        self.truncate = truncate
        self.tokenizer = tok
        self._session = session
        self._output = output
        self._token_states = token_states
        self._modes = modes
        self._fixed_batch = fixed_batch
        self._fixed_length = fixed_length
        self._tokens_per_call = None if fixed_batch or fixed_length else tokens_per_call(path)
        self._bulk = bulk  # (one-thread session, how many batches at once), or None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()  # guards _pool and _calls
        self._calls = 0  # embed calls in flight
        self._inputs = {i.name: (np.int32 if "int32" in i.type else np.int64) for i in session.get_inputs()}
        self.dimensions = dimensions if dimensions else self._probe_dimensions()

    @property
    def multi_vector(self) -> bool:
        return self._modes == ("multi-vector",)

    @classmethod
    def load(cls, ref: str | Path, *, threads: int | None = None, pooling: str | None = None,
             normalize: bool | None = None, max_length: int | None = None,
             truncate: bool = True) -> OnnxEmbeddingModel:
        """Load an embedding folder (a path or a store name) whose graph takes token ids."""
        path = store.resolve(ref)
        found = layout.inspect(path)
        if found.require() != "embedding":
            raise ModelLoadError(f"{path.name} is not an embedding graph over token ids but a {found.kind} model",
                                 hint="load it with onnxg.runtime.loading.load_model")
        assert found.graph is not None and found.tokenizer is not None
        if threads is not None and threads < 1:
            raise InvalidRequest("threads must be at least 1", param="threads")
        config = pool_lib.read_config(path)
        output, token_states = layout.choose_output(found.outputs, prefer_tokens=pooling is not None) or (None, False)
        assert output is not None  # the layout has an "outputs" issue otherwise
        if token_states and config.unsupported:
            raise ModelLoadError(
                f"the model's sentence-transformers pipeline has a {config.unsupported[0]} module, "
                "which this ONNX graph does not include and onnxg does not run",
                hint="export the whole sentence-transformers pipeline (its sentence_embedding output)",
            )
        modes = (pool_lib.canonical(pooling),) if pooling is not None else config.modes
        if modes == ("multi-vector",) and not token_states:
            raise InvalidRequest("this model outputs one pooled vector per input; multi-vector needs token states",
                                 param="pooling")
        fixed_batch, fixed_length = _fixed_dims(found.inputs)
        limits = [x for x in (position_limit(path), fixed_length) if x]
        limit = min(limits) if limits else None
        if max_length is not None and max_length < 2:
            raise InvalidRequest("max_length must be at least 2", param="max_length")
        chosen = max_length if max_length is not None else model_max_length(path, config.max_seq_length)
        if limit and chosen > limit:
            if max_length is not None:
                raise InvalidRequest(f"max_length {max_length} is more than the model's {limit} positions",
                                     param="max_length")
            chosen = limit
        tok = embed_tokenizer.load(found.tokenizer, chosen)
        session = open_session(found.graph, threads)
        workers = threads or os.cpu_count() or 1
        bulk = None
        if workers > 1 and fixed_batch is None and layout.graph_bytes(found.graph) <= BULK_SESSION_MAX_BYTES:
            bulk = (open_session(found.graph, 1), workers)
        width = next((o.shape[-1] for o in found.outputs if o.name == output and o.shape), None)
        dims = None
        if isinstance(width, int):
            dims = width * len(modes) if token_states and modes != ("multi-vector",) else width
        return cls(path, session, tok, output=output, token_states=token_states, modes=modes,
                   normalize=config.normalize if normalize is None else normalize, truncate=truncate,
                   dimensions=dims, fixed_batch=fixed_batch, fixed_length=fixed_length, bulk=bulk)

    # -- embedding -----------------------------------------------------------------------

    def embed(self, texts: list[str], *, batch_size: int = 32) -> EmbeddingResult:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest("input must be a list of strings", param="input")
        if not texts:
            return self._empty()
        encoded = self.tokenizer.encode(list(texts))
        if not self.truncate:
            for index, cut in enumerate(encoded.truncated):
                if cut:
                    raise ContextLengthExceeded(
                        f"input {index} is longer than the model's maximum of {self.max_length} tokens",
                        hint="shorten it, or allow truncation", param="input")
        return self._run(encoded.ids, batch_size)

    def embed_tokens(self, ids: list[list[int]], *, batch_size: int = 32) -> EmbeddingResult:
        """Embed token ids as given (the model's special tokens are the caller's to add)."""
        rows: list[list[int]] = []
        for index, row in enumerate(ids):
            if not isinstance(row, (list, tuple)) or not row or not all(isinstance(t, int) for t in row):
                raise InvalidRequest(f"input {index} must be a non-empty list of token ids", param="input")
            if min(row) < 0 or max(row) >= self.tokenizer.vocab_size:
                raise InvalidRequest(f"input {index} has a token id outside 0..{self.tokenizer.vocab_size - 1}",
                                     param="input")
            if len(row) > self.max_length:
                if not self.truncate:
                    raise ContextLengthExceeded(
                        f"input {index} has {len(row)} tokens, more than the model's maximum of {self.max_length}",
                        hint="shorten it, or allow truncation", param="input")
                row = row[:self.max_length]
            rows.append(list(row))
        return self._run(rows, batch_size) if rows else self._empty()

    def warmup(self) -> None:
        self.embed(["warm up"], batch_size=1)

    def close(self) -> None:
        """Stop the batch workers (the session goes with the object)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _empty(self) -> EmbeddingResult:
        return EmbeddingResult([] if self.multi_vector else np.zeros((0, self.dimensions), np.float32), [])

    def _run(self, ids: list[list[int]], batch_size: int) -> EmbeddingResult:
        if batch_size < 1:
            raise InvalidRequest("batch_size must be at least 1", param="batch_size")
        batch_size = self._fixed_batch or batch_size
        chunks = self._batches(ids, batch_size)
        out: list[Any] = [None] * len(ids)
        with self._pool_lock:
            self._calls += 1
            alone = self._calls == 1
        try:
            for chunk, vectors in zip(chunks, self._map(ids, chunks, alone), strict=True):
                for index, vector in zip(chunk, vectors, strict=True):
                    out[index] = vector
        finally:
            with self._pool_lock:
                self._calls -= 1
        vectors = out if self.multi_vector else np.stack(out).astype(np.float32, copy=False)
        return EmbeddingResult(vectors, [len(row) for row in ids])

    def _batches(self, ids: list[list[int]], batch_size: int) -> list[list[int]]:
        """The model calls, as lists of input positions: sorted by length, each filled with
        up to ``batch_size`` inputs and, past its first input, ``_tokens_per_call`` padded
        tokens (``ACTIVATION_BUDGET_BYTES``); two or more inputs that would fill one or two
        calls make two, split where padding and the bigger call are least (``BATCHING``).
        The cut depends on the inputs and ``batch_size`` alone (never on threads or load), so
        every process embeds an input with the same neighbours."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        budget = self._tokens_per_call or 0
        if not budget:  # a graph of fixed shapes: whole batches
            return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        lengths = [len(ids[i]) for i in order]
        total = len(order)

        def fits(count: int, width: int) -> bool:
            """Whether ``count`` inputs padded to ``width`` tokens may make one call."""
            return count == 1 or (count <= batch_size and count * width <= budget)

        starts, count = [0], 0
        for position, length in enumerate(lengths):  # sorted: the input joining a call is its widest
            if count and not fits(count + 1, length):
                starts.append(position)
                count = 0
            count += 1
        if len(starts) <= 2 and total >= 2:

            def cost(split: int) -> tuple[int, int]:
                """The padded tokens of both calls plus the bigger one's (what the two take on
                busy threads, and side by side on idle ones), then the padded tokens."""
                first, second = split * lengths[split - 1], (total - split) * lengths[-1]
                return first + second + max(first, second), first + second

            splits = [k for k in range(1, total) if fits(k, lengths[k - 1]) and fits(total - k, lengths[-1])]
            starts = [0, min(splits, key=cost)]
        return [order[a:b] for a, b in zip(starts, starts[1:] + [total])]

    def _map(self, ids: list[list[int]], chunks: list[list[int]], alone: bool) -> Iterator[list[Any]]:
        """Each batch's vectors, in order. The one batch of a call alone (a single input) gets
        the session with every thread, in this thread; otherwise (several batches, or other
        calls running, as in a busy server) the batches go to ``workers`` threads, one batch
        each on the one-thread session (``BULK_SESSION_MAX_BYTES``). A batch is the same
        computation whichever session runs it: the vectors are bit-identical either way."""
        if self._bulk is None or (alone and len(chunks) < 2):
            return (self._batch([ids[i] for i in chunk], self._session) for chunk in chunks)
        session, workers = self._bulk
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="onnxg-embed")
            pool = self._pool
        return pool.map(lambda chunk: self._batch([ids[i] for i in chunk], session), chunks)

    def _batch(self, rows: list[list[int]], session: Any) -> list[Any]:
        count = len(rows)
        width = self._fixed_length or max(len(r) for r in rows)
        height = max(count, self._fixed_batch or 0)
        input_ids = np.full((height, width), self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((height, width), dtype=np.int64)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        if height > count:
            mask[count:, 0] = 1  # keep padding rows well-defined
        feeds: dict[str, np.ndarray] = {}
        for name, dtype in self._inputs.items():
            if name == "input_ids":
                value = input_ids
            elif name == "attention_mask":
                value = mask
            elif name == "position_ids":
                value = np.broadcast_to(np.arange(width, dtype=np.int64), (height, width))
            else:
                value = np.zeros((height, width), dtype=np.int64)
            feeds[name] = value.astype(dtype, copy=False)
        try:
            result = session.run([self._output], feeds)[0][:count]
        except Exception as exc:  # an ONNX Runtime error: its C++ text is not for users
            raise ModelLoadError(f"the model failed to run: {str(exc).splitlines()[0][:200]}",
                                 hint="check the model folder with `onnxg check`") from None
        result = result.astype(np.float32, copy=False)
        mask = mask[:count]
        if not self._token_states:
            return list(pool_lib.normalize_rows(result) if self.normalize else result)
        if self.multi_vector:
            rows_out = [result[r, :len(rows[r])] for r in range(count)]
            return [pool_lib.normalize_rows(v) if self.normalize else v.copy() for v in rows_out]
        vectors = pool_lib.pool(result, mask, self._modes)
        return list(pool_lib.normalize_rows(vectors) if self.normalize else vectors)

    def _probe_dimensions(self) -> int:
        vectors = self._run([[self.tokenizer.pad_id]], 1).vectors
        return int(vectors[0].shape[-1])


def tokens_per_call(folder: Path) -> int:
    """The padded tokens a model call may hold (``ACTIVATION_BUDGET_BYTES``), from the
    feed-forward width in config.json (4 x hidden size when it does not say)."""
    config = store.read_json(folder / "config.json")
    width = config.get("intermediate_size")
    if not isinstance(width, int) or width <= 0:
        hidden = config.get("hidden_size")
        width = 4 * hidden if isinstance(hidden, int) and hidden > 0 else 1536
    return max(16, ACTIVATION_BUDGET_BYTES // (4 * width))


def _fixed_dims(inputs: tuple[layout.ValueInfo, ...]) -> tuple[int | None, int | None]:
    """A batch size or sequence length fixed in the graph (static exports), if any."""
    ids = next((i for i in inputs if i.name == "input_ids"), None)
    if not ids or not ids.shape or len(ids.shape) != 2:
        return None, None
    batch, length = ids.shape
    return (batch if isinstance(batch, int) and batch > 0 else None,
            length if isinstance(length, int) and length > 0 else None)


def open_session(onnx_path: Path, threads: int | None, optimized_copy: Path | None = None) -> Any:
    """The CPU session an embedding graph runs in; ``optimized_copy`` saves the graph ONNX
    Runtime will run (for tests)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle ONNX Runtime workers spin by default; between the many small kernels of an encoder
    # and next to the tokenizer, the server and other processes that spinning takes the cores
    # they need (all-MiniLM-L6-v2 int8, 1,000 sentences, 2 threads, shared 2-core AVX-512 box,
    # alternating: 2.71 s median without spinning against 4.25 s with it).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_copy is not None:
        options.optimized_model_filepath = str(optimized_copy)
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=CPU_DISABLED_FUSIONS)
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {onnx_path.name}: {str(exc).splitlines()[0][:200]}",
                             hint="check the folder with `onnxg check`; external .onnx.data files must sit "
                                  "next to the model") from None
