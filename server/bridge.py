"""Blocking runtime iterators, consumed from the event loop.

onnxruntime-genai calls block, so a stream's runtime iterator runs in a thread of its own
and hands each item to the loop (``call_soon_threadsafe``). A window of items bounds how far
the producer runs ahead of a slow client (backpressure). ``close()`` sets the ``cancel``
event the runtime watches, so generation stops at the next token even while the thread is
blocked inside the runtime; the thread then closes the runtime iterator itself (closing a
generator from another thread while it runs is an error).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


class ThreadedIterator(Generic[T], AsyncIterator[T]):
    def __init__(self, start: Callable[[threading.Event], Iterator[T]], *, window: int = 256) -> None:
        self.cancel = threading.Event()
        self._start = start
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        self._window = threading.Semaphore(window)
        self._thread = threading.Thread(target=self._run, name="onnxg-stream", daemon=True)
        self._thread.start()

    def _put(self, kind: int, value: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel.set()

    def _run(self) -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = self._start(self.cancel)
            for item in iterator:
                while not self._window.acquire(timeout=0.05):
                    if self.cancel.is_set():
                        return
                if self.cancel.is_set():
                    return
                self._put(_ITEM, item)
            self._put(_END, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_ERROR, exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - nothing to report to once cancelled
                    pass

    def __aiter__(self) -> ThreadedIterator[T]:
        return self

    async def __anext__(self) -> T:
        kind, value = await self._queue.get()
        if kind == _ITEM:
            self._window.release()
            return value  # type: ignore[return-value]
        if kind == _END:
            self._queue.put_nowait((_END, None))  # stay exhausted
            raise StopAsyncIteration
        raise value  # type: ignore[misc]

    def close(self) -> None:
        """Stop the runtime at its next token (safe to call more than once)."""
        self.cancel.set()
