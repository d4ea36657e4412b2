"""The server's concurrency limit: inference requests in flight beyond it get 429 at once.

Answering at once (rather than queueing) keeps latency bounded and lets clients back off
(``Retry-After``); the runtime batches the requests that are admitted.
"""

from __future__ import annotations

import threading

from onnxg.server.errors import busy


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def acquire(self) -> Slot:
        with self._lock:
            if self.used >= self.limit:
                raise busy(self.limit)
            self.used += 1
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self.used -= 1


class Slot:
    """One admitted request; ``release()`` is idempotent."""

    def __init__(self, slots: Slots) -> None:
        self._slots: Slots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots._release()
            self._slots = None
