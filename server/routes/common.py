"""What the chat and legacy completion routes share: ids, SSE framing, the runtime calls."""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from onnxg import __version__
from onnxg.server.bridge import ThreadedIterator
from onnxg.server.errors import client_gone, sse_error
from onnxg.server.limits import Slot, Slots
from onnxg.server.metrics import Metrics
from onnxg.server.protocol import PromptTokensDetails, StreamOptions, Usage

if TYPE_CHECKING:
    from litestar.response import Stream

    from onnxg.runtime.contracts import ChatModel, Result
    from onnxg.runtime.contracts import Usage as RuntimeUsage

    from onnxg.runtime.options import GenerationOptions

FINGERPRINT = f"onnxg-{__version__}"
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class StreamFormat(Protocol):
    """How one endpoint writes its SSE chunks (chat and legacy completions differ)."""

    def head(self) -> list[bytes]: ...
    def chunk(self, chunk: Any, finish_reason: str | None) -> bytes | None: ...
    def finish(self, index: int) -> bytes: ...
    def usage(self, usage: Usage) -> bytes: ...


class Cleanup:
    """Stops the runtime and frees the concurrency slot, once, however the stream ends.

    Runs from the event generator's ``finally`` and, as a fallback, when the generator is
    garbage-collected: a client that disconnects before the body starts leaves a generator
    that never ran, whose ``finally`` never will.
    """

    def __init__(self, iterator: ThreadedIterator[Any], slot: Slot) -> None:
        self.iterator = iterator
        self.slot = slot

    def __call__(self) -> None:
        self.iterator.close()
        self.slot.release()


async def open_stream(
    start: Callable[[threading.Event], Iterator[Any]], slot: Slot
) -> tuple[Any, ThreadedIterator[Any]]:
    """Start the runtime and wait for its first item, so that errors the runtime raises
    before generating (context too long, bad options) are plain HTTP errors, not stream events."""
    iterator: ThreadedIterator[Any] = ThreadedIterator(start)
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        iterator.close()
        slot.release()
        raise
    return first, iterator


def event_stream(
    fmt: StreamFormat,
    first: Any,
    iterator: ThreadedIterator[Any],
    slot: Slot,
    *,
    n: int,
    include_usage: bool,
    on_first_token: Callable[[], None],
    on_usage: Callable[[Usage], None],
) -> AsyncIterator[bytes]:
    """The SSE body: head chunks, one chunk per runtime chunk, exactly one finish_reason per
    choice, the usage chunk when asked, ``data: [DONE]``; an error mid-stream as a data line."""
    from onnxg.runtime.contracts import Chunk

    cleanup = Cleanup(iterator, slot)

    async def events() -> AsyncIterator[bytes]:
        try:
            for head in fmt.head():
                yield head
            finished: set[int] = set()
            usage: Usage | None = None
            seen_token = False
            item = first
            while item is not None:
                if isinstance(item, Chunk):
                    if not seen_token:
                        seen_token = True
                        on_first_token()
                    finish = item.finish_reason if item.index not in finished else None
                    if finish is not None:
                        finished.add(item.index)
                    data = fmt.chunk(item, finish)
                    if data is not None:
                        yield data
                else:
                    usage = wire_usage(item)
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    item = None
            for index in range(n):
                if index not in finished:
                    yield fmt.finish(index)
            if usage is not None:
                on_usage(usage)
                if include_usage:
                    yield fmt.usage(usage)
            yield DONE
        except Exception as exc:  # noqa: BLE001 - the stream has begun: report in-band
            yield sse_error(exc)
        finally:
            cleanup()

    generator = events()
    weakref.finalize(generator, cleanup)
    return generator


def wire_usage(usage: RuntimeUsage) -> Usage:
    """OpenAI's usage object from the runtime's token counts."""
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
                 PromptTokensDetails(usage.cached_tokens))


async def stream_response(
    model: ChatModel,
    model_id: str,
    prompt: Any,
    opts: GenerationOptions,
    fmt: StreamFormat,
    *,
    stream_options: StreamOptions | None,
    slots: Slots,
    metrics: Metrics,
    started: float,
) -> Stream:
    """One streamed chat or legacy completion: the SSE response, holding a concurrency slot
    until the stream ends."""
    from litestar.response import Stream

    slot = slots.acquire()
    first, iterator = await open_stream(lambda cancel: model.stream(prompt, opts, cancel=cancel), slot)
    body = event_stream(
        fmt,
        first,
        iterator,
        slot,
        n=opts.n,
        include_usage=bool(stream_options and stream_options.include_usage),
        on_first_token=lambda: metrics.first_token(model_id, time.perf_counter() - started),
        on_usage=lambda u: metrics.tokens(model_id, u.prompt_tokens, u.completion_tokens),
    )
    return Stream(body, media_type="text/event-stream", headers=SSE_HEADERS, status_code=200)


async def complete(
    request: Any, model: ChatModel, model_id: str, prompt: Any, opts: GenerationOptions, *, slots: Slots,
    metrics: Metrics,
) -> tuple[Result, Usage]:
    """One non-streamed chat or legacy completion, holding a concurrency slot meanwhile:
    the runtime's result (for the route to shape) and its usage. A client that disconnects
    meanwhile cancels the generation (its rows are freed at the next step)."""
    import anyio

    from onnxg.runtime.contracts import collect

    slot = slots.acquire()
    cancel, gone = threading.Event(), threading.Event()

    def run() -> Result:
        return collect(model.stream(prompt, opts, cancel), opts.n, logprobs=opts.logprobs)

    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_watch_disconnect, request, cancel, gone)
            try:
                result = await anyio.to_thread.run_sync(run)
            except Exception as exc:  # noqa: BLE001 - re-raised below, not wrapped in an ExceptionGroup
                failure = exc
            group.cancel_scope.cancel()
    finally:
        cancel.set()
        slot.release()
    if failure is not None:
        raise failure
    if gone.is_set():
        raise client_gone()
    usage = wire_usage(result.usage)
    metrics.tokens(model_id, usage.prompt_tokens, usage.completion_tokens)
    return result, usage


async def _watch_disconnect(request: Any, cancel: threading.Event, gone: threading.Event) -> None:
    """Wait for the ASGI ``http.disconnect`` of a request whose body was read, then set ``cancel``."""
    if request is None:
        return
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            gone.set()
            cancel.set()
            return
