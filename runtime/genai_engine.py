"""The fallback scheduler: chat requests on onnxruntime-genai's Generator, for the graphs the
continuous-batching engine (``batcher.py``) cannot drive (``kvgraph.unsupported`` says which).

Callers (any number of threads) submit a ``Job`` (one prompt, n rows) and read its events
from a queue. Each tick gathers the jobs that arrived since the last one into one batched
``og.Generator`` (prompts right-padded, which onnxruntime-genai handles exactly), and steps
every live batch one token, round robin. So requests that arrive together share one forward
pass per token, and nothing waits behind a global lock for a whole reply. Ticks are run by
the consumers themselves (see ``Engine``), so a lone request pays no thread hand-off.

Why not ``og.Engine``: in onnxruntime-genai 0.18 its dynamic (continuous) batching needs a
paged key-value cache model ("Paged cache input must have rank four ..." for builder output),
and its static mode refuses per-request seeds and stop strings and hides the logits we need for
OpenAI penalties and logprobs. A batched ``og.Generator`` accepts one ``append_tokens`` only,
so the next tokens are chosen in numpy (``sampling.Sampler``) and, where they differ from the
plain argmax, forced through ``set_logits`` before ``generate_next_token``.

A row that finished (its own token budget, a stop string, a cancelled consumer) is forced to
end-of-sequence, so onnxruntime-genai pads it from then on; a batch whose rows have all
finished is dropped at once, freeing its key-value cache.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from onnxg.runtime.errors import GenerationError, short_message
from onnxg.runtime.jobs import Job, Row

log = logging.getLogger(__name__)

MAX_BATCH = 16
COALESCE_S = 0.003


class _Batch:
    def __init__(self, engine: Engine, rows: list[Row]) -> None:
        import onnxruntime_genai as og

        self.rows = rows
        self.size = len(rows)
        width = max(len(r.prompt) for r in rows)
        longest = max(len(r.prompt) + r.budget for r in rows)
        # sliding-window models (Gemma 2) need a key-value cache of at least the window
        self.max_length = min(engine.context_length, max(longest, width + 1, engine.min_cache))
        params = og.GeneratorParams(engine.model)
        # plain greedy inside onnxruntime-genai: every penalty and sampling choice is ours
        params.set_search_options(max_length=self.max_length, batch_size=self.size, do_sample=False,
                                  repetition_penalty=1.0, min_length=0)
        self.generator = og.Generator(engine.model, params)
        for row in rows:  # a right-padded row cannot grow past the padded width's room
            row.budget = min(row.budget, self.max_length - width)
        if self.size == 1:
            self.generator.append_tokens(np.asarray(rows[0].prompt, dtype=np.int32))
        else:
            ids = np.full((self.size, width), engine.pad_id, dtype=np.int32)
            for i, row in enumerate(rows):
                ids[i, : len(row.prompt)] = row.prompt
            self.generator.append_tokens(ids)
        self.forced = np.full((self.size, engine.vocab_size), -1e9, dtype=np.float32)  # resized if needed
        self.engine = engine

    @property
    def live(self) -> bool:
        return any(not r.finished for r in self.rows)

    def step(self) -> None:
        """Choose one token per row from the current logits and feed them back.

        When every row's choice is the plain argmax (greedy without penalties, or a finished
        row whose argmax already is end-of-sequence), onnxruntime-genai's own greedy step picks
        the same tokens and ``set_logits`` is skipped: the common case costs what a bare loop
        costs. Otherwise the chosen tokens are forced with one-hot logits.
        """
        engine = self.engine
        logits = self.generator.get_logits().reshape(self.size, -1)
        chosen = np.full(self.size, engine.eos_id, dtype=np.int32)
        open_rows: list[int] = []
        force = False
        for i, row in enumerate(self.rows):
            if row.closed:
                continue  # onnxruntime-genai saw its end-of-sequence and pads it
            if not row.finished and row.job.cancelled:
                row.finished = True
                row.job.events.put(("end", row.index, "cancelled"))
            if row.finished:
                row.closed = True
                force = force or int(np.argmax(logits[i])) not in engine.eos_ids
                continue
            token = row.sampler.choose(logits[i])
            chosen[i] = token
            open_rows.append(i)
            force = force or token != int(np.argmax(logits[i]))
        if not open_rows:
            return
        if force:
            if self.forced.shape[1] != logits.shape[1]:  # a vocab padded past genai_config's size
                self.forced = np.full(logits.shape, -1e9, dtype=np.float32)
            rows = np.arange(self.size)
            self.forced[rows, chosen] = 0.0
            self.generator.set_logits(self.forced)
            self.generator.generate_next_token()
            self.forced[rows, chosen] = -1e9
        else:
            self.generator.generate_next_token()
            chosen = self.generator.get_next_tokens().reshape(-1)  # equal, up to exact ties
        for i in open_rows:
            self._report(self.rows[i], int(chosen[i]), logits[i])

    def _report(self, row: Row, token: int, logits: np.ndarray) -> None:
        if row.accept(token, logits, self.engine.eos_ids) and token in self.engine.eos_ids:
            row.closed = True  # onnxruntime-genai saw the end of sequence itself

    def fail(self, exc: BaseException) -> None:
        jobs = {id(r.job): r.job for r in self.rows}
        for job in jobs.values():
            job.events.put(("error", exc))
        for row in self.rows:
            row.finished = True


class Engine:
    """Owns one og.Model and the batches running on it.

    There is no scheduler thread: the consumers drive. A consumer that needs its next event
    and finds none takes the drive lock (if free) and runs one tick for everybody: admit the
    jobs that arrived, then one token for every batch. The others wait on their own queues,
    which the driver fills. So a lone request runs on its own thread like a bare loop, and
    concurrent requests share each forward pass instead of queueing behind a lock.
    """

    def __init__(self, model: Any, *, context_length: int, vocab_size: int, eos_ids: list[int],
                 pad_id: int, max_batch: int = MAX_BATCH, min_cache: int = 0) -> None:
        self.model = model
        self.min_cache = min_cache
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.eos_ids = frozenset(eos_ids)
        self.eos_id = eos_ids[0]
        self.pad_id = pad_id
        self.max_batch = max_batch
        self._pending: list[Row] = []
        self._pending_lock = threading.Lock()
        self._batches: list[_Batch] = []
        self._drive = threading.Lock()
        self._closed = False
        self.peak_batch = 0  # the most rows one forward pass has carried (for tests and metrics)

    def submit(self, job: Job) -> None:
        with self._pending_lock:
            if self._closed:
                raise GenerationError("the model was closed")
            self._pending.extend(job.rows)

    def next_event(self, job: Job) -> tuple[Any, ...] | None:
        """The job's next event, driving the model while nobody else does; None once cancelled."""
        while True:
            if job.cancelled:
                return None
            try:
                return job.events.get_nowait()
            except queue.Empty:
                pass
            if self._drive.acquire(blocking=False):
                try:
                    self._tick()
                finally:
                    self._drive.release()
                continue
            try:
                return job.events.get(timeout=0.02)  # another thread drives: wait for our token
            except queue.Empty:
                continue

    def leave(self, job: Job) -> None:
        """A consumer is done (finished, cancelled, or stopped reading): free its rows now."""
        job.stopped = True
        # With a timeout, not blocking: a generator finalised by the garbage collector during a
        # tick on this very thread must not deadlock; that tick's own reap frees the rows then.
        if self._drive.acquire(timeout=1.0):
            try:
                self._reap()
            finally:
                self._drive.release()

    def close(self) -> None:
        with self._pending_lock:
            self._closed = True
            pending, self._pending = self._pending, []
        error = GenerationError("the model was closed")
        for row in pending:
            row.job.events.put(("error", error))
        with self._drive:
            for batch in self._batches:
                batch.fail(error)
            self._batches.clear()

    @property
    def active_rows(self) -> int:
        return sum(1 for b in self._batches for r in b.rows if not r.finished)

    def _reap(self) -> None:
        for batch in list(self._batches):
            for row in batch.rows:
                if not row.finished and row.job.cancelled:
                    row.finished = True
            if not batch.live:
                self._batches.remove(batch)
                del batch.generator

    def _admit(self, rows: list[Row]) -> None:
        rows = [r for r in rows if not r.job.cancelled]
        # A prompt ending in the pad token would be read as padding in a batch: run it alone.
        alone = [r for r in rows if r.prompt and r.prompt[-1] == self.pad_id]
        shared = [r for r in rows if not (r.prompt and r.prompt[-1] == self.pad_id)]
        groups = [[r] for r in alone] + [shared[i:i + self.max_batch] for i in range(0, len(shared), self.max_batch)]
        for group in groups:
            try:
                self._batches.append(_Batch(self, group))
                self.peak_batch = max(self.peak_batch, len(group))
            except Exception as exc:  # onnxruntime-genai refused (memory, bad input)
                log.exception("prefill failed")
                for job in {id(r.job): r.job for r in group}.values():
                    job.events.put(("error", GenerationError(f"generation failed: {short_message(exc)}")))

    def _tick(self) -> None:
        if not self._batches and self._pending:
            time.sleep(COALESCE_S)  # an idle engine: let requests sent together share a batch
        with self._pending_lock:
            new, self._pending = self._pending, []
        if new:
            self._admit(new)
        for batch in list(self._batches):
            try:
                batch.step()
            except Exception as exc:
                log.exception("decode step failed")
                batch.fail(GenerationError(f"generation failed: {short_message(exc)}"))
        self._reap()
