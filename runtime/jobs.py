"""What the chat engines share: a ``Job`` (one prompt, n rows) and its ``Row``s, and the one
rule of what a chosen token does to a row (``Row.accept``).

Both engines (``batcher.py``, ``genai_engine.py``) report into ``Job.events``:
("token", row_index, token_id, logprob_info | None), ("end", row_index, reason),
("error", exception); reason is "stop" (end of sequence, or a complete grammar), "length" or
"cancelled".
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxg.runtime.sampling import Sampler, log_softmax, top_logprobs


@dataclass
class Row:
    """One sequence being generated: one choice of one job."""

    job: Job
    index: int
    sampler: Sampler
    prompt: list[int]
    budget: int  # tokens it may still generate
    generated: int = 0
    finished: bool = False  # set by the scheduler, or by the consumer (stop string found)
    closed: bool = False  # onnxruntime-genai was given its end-of-sequence token

    def accept(self, token: int, logits: np.ndarray, eos_ids: Any) -> bool:
        """The token the sampler chose from ``logits``: reported (with logprobs when asked), then
        the row's end when it is one (end of sequence, a complete grammar, the budget spent).
        True when the row ended."""
        info = None
        if self.sampler.want_logprobs:
            lp = log_softmax(logits)
            info = (float(lp[token]), top_logprobs(lp, self.sampler.top_logprobs))
        self.sampler.remember(token)
        self.generated += 1
        events = self.job.events
        if token in eos_ids:
            self.finished = True
            events.put(("end", self.index, "stop"))
            return True
        events.put(("token", self.index, token, info))
        if self.sampler.finished or self.generated >= self.budget:
            self.finished = True
            events.put(("end", self.index, "stop" if self.sampler.finished else "length"))
            return True
        return False


@dataclass
class Job:
    """A prompt with n rows; the scheduler reports into ``events``.

    Events: ("token", row_index, token_id, logprob_info | None), ("end", row_index, reason),
    ("error", exception). reason: "stop" (end of sequence), "length" or "cancelled".
    """

    prompt: list[int]
    rows: list[Row] = field(default_factory=list)
    events: queue.SimpleQueue[tuple[Any, ...]] = field(default_factory=queue.SimpleQueue)
    cancel: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False  # the consumer left; unlike ``cancel`` (the caller's), set by us
    cached_tokens: int = 0  # prompt tokens whose key-value entries were reused, not computed

    @property
    def cancelled(self) -> bool:
        return self.stopped or self.cancel.is_set()

    def finish_row(self, index: int) -> None:
        """Called by the consumer: stop generating this row at the next token."""
        self.rows[index].finished = True
