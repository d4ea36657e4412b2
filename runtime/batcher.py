"""Continuous batching of chat rows over the decoder graph, within a key-value memory budget.

One scheduler thread per model runs steps. A step:
1. drops the rows that ended or whose consumer left (their slots are compacted by moving the
   last row into the hole, and their entries are kept in the prefix cache);
2. admits waiting rows while the memory budget allows, copying the longest prefix already
   computed (by a running row, or kept in ``prefix.PrefixCache``) into the new row's slot;
3. runs one chunk (``CHUNK`` tokens) of the prefilling row's prompt, if any (all but its last
   token, which the decode pass computes);
4. runs one decode pass over all rows: every row has its own length (``kvgraph``), so rows
   that joined at different times share the forward pass.

Memory: the buffers hold ``rows x length`` token entries, grown (geometrically, by layer so a
resize never holds two copies) as rows join and grow, shrunk when the engine is idle. Buffers
plus prefix cache never pass ``budget``: the cache is evicted first, then the most recently
admitted rows are preempted (freed and put back at the head of the queue; their prompt and
tokens so far are recomputed when they return, so their output is the same). A row whose
prompt plus max_tokens cannot fit alone is refused before it starts (``row_budget``); a row
without max_tokens stops at the memory's room ("length"). Waiting rows are bounded
(``max_waiting``); beyond it ``submit`` raises ``QueueFull``.

The rows' tokens are chosen by their own ``sampling.Sampler`` (``choose``, ``remember``), so
seeded sampling does not depend on what else runs. A sampler that says its row is complete
(``sampler.finished``, for constrained decoding) ends the row as "stop".
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxg.runtime.jobs import Job, Row
from onnxg.runtime.errors import GenerationError, KVBudgetExceeded, QueueFull, short_message
from onnxg.runtime.kvgraph import DecoderGraph
from onnxg.runtime.prefix import PrefixCache, common_prefix

log = logging.getLogger(__name__)

CHUNK = 256  # prompt tokens per prefill pass, so running rows keep flowing meanwhile
GROW = 256  # buffer lengths are multiples of this
MAX_BATCH = 32
MAX_WAITING = 256
MIN_REUSE = 4  # shorter common prefixes are recomputed
CACHE_SHARE = 0.25  # of the budget, at most, for the prefix cache


@dataclass(eq=False)
class _Seq:
    row: Row
    tokens: list[int]  # prompt, then every generated token
    order: int
    cached: int = 0  # leading tokens whose key-value entries are in the row's slot
    started: bool = False

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.cached

    @property
    def gone(self) -> bool:
        return self.row.finished or self.row.job.cancelled


class BatchEngine:
    """The scheduler of one model (see the module docstring). Same interface as ``engine.Engine``."""

    def __init__(self, graph: DecoderGraph, *, context_length: int, eos_ids: list[int], budget: int,
                 max_batch: int = MAX_BATCH, max_waiting: int = MAX_WAITING, chunk: int = CHUNK) -> None:
        self.graph = graph
        self.buffers = graph.buffers()
        self.context_length = context_length
        self.eos_ids = frozenset(eos_ids)
        self.budget = budget
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.chunk = chunk
        self.cache = PrefixCache(int(budget * CACHE_SHARE))
        self._rows: list[_Seq] = []  # index = slot in the buffers
        self._waiting: deque[_Seq] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._order = 0
        self.peak_batch = 0
        self.peak_bytes = 0
        self.preempted = 0

    # -- sizes ---------------------------------------------------------------------------

    @property
    def token_bytes(self) -> int:
        return self.buffers.token_bytes

    @property
    def max_row_tokens(self) -> int:
        """The most tokens (prompt + output) one row may hold: the context, or what the budget holds."""
        return min(self.context_length, self.budget // self.token_bytes)

    def row_budget(self, prompt_tokens: int, max_tokens: int | None, n: int, prompt_param: str) -> int:
        """The tokens each of ``n`` rows may generate; KVBudgetExceeded if they can never run."""
        mb = self.budget / 2**20
        room = self.max_row_tokens - prompt_tokens
        if room <= 0:
            raise KVBudgetExceeded(
                f"the prompt ({prompt_tokens} tokens) needs more key-value memory than this server's budget "
                f"({mb:.0f} MB holds {self.max_row_tokens} tokens per row)",
                hint="shorten the prompt, or start the server with a larger --kv-cache-mb", param=prompt_param)
        if max_tokens is not None and max_tokens > room:
            raise KVBudgetExceeded(
                f"max_tokens={max_tokens} does not fit this server's key-value memory budget ({mb:.0f} MB): "
                f"with this prompt a row may generate at most {room} tokens",
                hint="lower max_tokens, or start the server with a larger --kv-cache-mb", param="max_tokens")
        if n > self.max_waiting:
            raise KVBudgetExceeded(f"n={n} is more than the {self.max_waiting} rows this server queues",
                                   hint=f"ask for n <= {self.max_waiting}", param="n")
        return room if max_tokens is None else max_tokens

    def stats(self) -> dict[str, int]:
        return {"kv_budget_bytes": self.budget, "kv_used_bytes": self.buffers.nbytes,
                "kv_peak_bytes": self.peak_bytes, "prefix_cache_bytes": self.cache.nbytes,
                "prefix_cache_hit_tokens": self.cache.reused_tokens, "rows_running": len(self._rows),
                "rows_waiting": len(self._waiting), "rows_preempted": self.preempted}

    # -- the consumers' side -------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise GenerationError("the model was closed")
            if len(self._waiting) + len(job.rows) > self.max_waiting:
                raise QueueFull(f"the server's queue is full ({len(self._waiting)} rows wait for memory)",
                                hint="retry shortly")
            for row in job.rows:
                self._order += 1
                self._waiting.append(_Seq(row, list(row.prompt), self._order))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="onnxg-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def next_event(self, job: Job) -> tuple[Any, ...] | None:
        while True:
            if job.cancelled:
                return None
            try:
                return job.events.get(timeout=0.05)
            except queue.Empty:
                if self._closed:
                    return ("error", GenerationError("the model was closed"))

    def leave(self, job: Job) -> None:
        job.stopped = True
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        error = GenerationError("the model was closed")
        for seq in [*self._waiting, *self._rows]:
            seq.row.job.events.put(("error", error))
        self._waiting.clear()
        self._rows.clear()
        self.buffers.resize(0, 0, [])
        self.cache.clear()

    @property
    def active_rows(self) -> int:
        return sum(1 for s in self._rows if not s.gone)

    # -- the scheduler -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._rows and not self._waiting:
                    if self.buffers.array_count:
                        self.buffers.resize(0, 0, [])  # idle: give the memory back
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self._step()
            except Exception as exc:  # a failed pass fails the rows it carried
                log.exception("generation step failed")
                error = GenerationError(f"generation failed: {short_message(exc)}")
                for seq in self._rows:
                    if not seq.gone:
                        seq.row.finished = True
                        seq.row.job.events.put(("error", error))
                self._rows.clear()
                self.buffers.resize(0, 0, [])

    def _step(self) -> None:
        self._reap()
        self._admit()
        prefilling = next((s for s in self._rows if s.pending > 1), None)
        if prefilling is not None:
            self._prefill(prefilling)
        decoding = [i for i, s in enumerate(self._rows) if s.pending == 1 and not s.gone]
        if decoding:
            self._decode(decoding[-1] + 1)
        self._reap()

    def _reap(self) -> None:
        rows = self._rows
        alive = [not s.gone for s in rows]
        if all(alive):
            return
        for slot, (seq, ok) in enumerate(zip(rows, alive, strict=True)):
            if ok:
                continue
            if not seq.row.finished:  # cancelled by its consumer
                seq.row.finished = True
                seq.row.job.events.put(("end", seq.row.index, "cancelled"))
            self._keep_prefix(seq, slot)
        count = sum(alive)
        holes = [i for i in range(count) if not alive[i]]
        tail = [i for i in range(count, len(rows)) if alive[i]]
        for hole, last in zip(holes, tail, strict=True):
            self.buffers.move(last, hole, rows[last].cached)
            rows[hole] = rows[last]
        del rows[count:]

    def _keep_prefix(self, seq: _Seq, slot: int) -> None:
        if seq.cached < MIN_REUSE or self.buffers.array_count == 0:
            return
        tokens = np.asarray(seq.tokens[: seq.cached], dtype=np.int64)
        if self.cache.covers(tokens) or seq.cached * self.token_bytes > self.cache.max_bytes:
            return
        self.cache.shrink(min(self.cache.max_bytes, self.budget - self.buffers.nbytes) - seq.cached * self.token_bytes)
        if self.buffers.nbytes + self.cache.nbytes + seq.cached * self.token_bytes <= self.budget:
            self.cache.add(tokens, self.buffers.snapshot(slot, seq.cached))

    # -- memory --------------------------------------------------------------------------

    def _length_for(self, tokens: int) -> int:
        return min(-(-tokens // GROW) * GROW, self.max_row_tokens)

    def _fits(self, rows: int, length: int) -> bool:
        return rows * length * self.token_bytes <= self.budget

    def _reserve(self, rows: int, length: int) -> bool:
        """Buffers of at least ``rows`` x ``length`` within the budget (cache evicted as needed)."""
        buf = self.buffers
        if buf.rows >= rows and buf.length >= length:
            return True
        length = max(length, buf.length)
        rows = max(rows, len(self._rows))
        if not self._fits(rows, length):
            return False
        # grow geometrically when the budget allows, so resizes (copies) stay rare
        grown_rows = min(self.max_batch, max(rows, 2 * buf.rows if rows > buf.rows else rows))
        grown_len = min(self.max_row_tokens, max(length, 2 * buf.length if length > buf.length else length))
        grown_len = self._length_for(grown_len)
        for r, n in ((grown_rows, grown_len), (rows, grown_len), (grown_rows, length), (rows, length)):
            if self._fits(r, n):
                rows, length = r, n
                break
        self.cache.shrink(self.budget - rows * length * self.token_bytes)
        buf.resize(rows, length, [s.cached for s in self._rows])
        self.peak_bytes = max(self.peak_bytes, buf.nbytes + self.cache.nbytes)
        return True

    def _grow_for(self, length: int) -> None:
        """Room for ``length`` tokens in every running row, preempting the newest rows while the
        budget is short."""
        length = self._length_for(length)
        while not self._reserve(len(self._rows), length):
            if len(self._rows) <= 1:
                raise GenerationError("a row outgrew the key-value budget")  # row_budget prevents it
            self._preempt_newest()

    def _preempt_newest(self) -> None:
        slot = max(range(len(self._rows)), key=lambda i: self._rows[i].order)
        seq = self._rows[slot]
        self.preempted += 1
        log.info("key-value budget full: row %d of a request waits and will be recomputed", seq.row.index)
        seq.cached = 0
        last = len(self._rows) - 1
        if slot != last:
            self.buffers.move(last, slot, self._rows[last].cached)
            self._rows[slot] = self._rows[last]
        self._rows.pop()
        with self._cond:
            self._waiting.appendleft(seq)

    # -- admission -----------------------------------------------------------------------

    def _admit(self) -> None:
        while True:
            with self._cond:
                while self._waiting and self._waiting[0].gone:
                    seq = self._waiting.popleft()
                    if not seq.row.finished:
                        seq.row.finished = True
                        seq.row.job.events.put(("end", seq.row.index, "cancelled"))
                if not self._waiting or len(self._rows) >= self.max_batch:
                    return
                seq = self._waiting[0]
            source, reuse = self._best_prefix(seq)
            if any(s.pending > 1 for s in self._rows) and reuse < len(seq.tokens) - 1:
                return  # one row prefills at a time; a row that needs no prefill may join
            need = max(self.buffers.length, self._length_for(len(seq.tokens) + 1))
            rows = len(self._rows) + 1
            headroom = self._length_for(need + GROW)
            if self._rows and not self._fits(rows, headroom):
                return  # wait for memory: rows that run now must be able to grow
            if not self._reserve(rows, need):
                return
            with self._cond:
                self._waiting.popleft()
            slot = len(self._rows)
            self._rows.append(seq)
            self.peak_batch = max(self.peak_batch, len(self._rows))
            if reuse:
                if isinstance(source, int):
                    self.buffers.move(source, slot, reuse)
                else:
                    self.buffers.load(slot, source.kv, reuse)
                    self.cache.reused_tokens += reuse
            seq.cached = reuse
            if not seq.started:
                seq.started = True
                if seq.row.index == 0:
                    seq.row.job.cached_tokens = reuse

    def _best_prefix(self, seq: _Seq) -> tuple[Any, int]:
        """(source slot or cache entry, tokens to copy) for ``seq``; at most all but its last token."""
        tokens = np.asarray(seq.tokens, dtype=np.int64)
        limit = len(seq.tokens) - 1
        source: Any = None
        best = 0
        for slot, other in enumerate(self._rows):
            if other.cached >= MIN_REUSE and not other.gone:
                n = min(common_prefix(np.asarray(other.tokens[: other.cached], dtype=np.int64), tokens), limit)
                if n > best:
                    source, best = slot, n
        entry, n = self.cache.best(tokens)
        if entry is not None and min(n, limit) > best:
            source, best = entry, min(n, limit)
        return (source, best) if best >= MIN_REUSE else (None, 0)

    # -- passes --------------------------------------------------------------------------

    def _prefill(self, seq: _Seq) -> None:
        """One chunk of the row's uncomputed tokens, all but the last: that one is always computed
        by a decode pass, so a prompt gives the same logits whether its prefix came from the
        cache or not (a prefill pass and a decode pass differ in the last bits)."""
        size = min(self.chunk, seq.pending - 1)
        self._grow_for(seq.cached + size)
        if seq not in self._rows:
            return
        slot = self._rows.index(seq)
        ids = np.asarray([seq.tokens[seq.cached: seq.cached + size]])
        self.graph.run(ids, np.asarray([seq.cached]), self.buffers, slot)
        seq.cached += size

    def _decode(self, count: int) -> None:
        self._grow_for(max(s.cached for s in self._rows[:count]) + 1)
        decoding = [i for i, s in enumerate(self._rows) if s.pending == 1 and not s.gone]
        if not decoding:  # preemption may have moved or dropped rows
            return
        rows = self._rows[: decoding[-1] + 1]
        # a row still prefilling rides along: its entry written at ``cached`` is rewritten by its next chunk
        ids = np.asarray([[s.tokens[-1] if s.pending == 1 else 0] for s in rows])
        lengths = np.asarray([s.cached for s in rows])
        logits = self.graph.run(ids, lengths, self.buffers, 0)
        for i, seq in enumerate(rows):
            if seq.pending == 1:
                seq.cached += 1
                self._choose(seq, logits[i])

    def _choose(self, seq: _Seq, logits: np.ndarray) -> None:
        row = seq.row
        if row.finished or row.job.cancelled:
            return
        token = row.sampler.choose(logits)
        seq.tokens.append(token)
        row.accept(token, logits, self.eos_ids)
