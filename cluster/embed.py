"""``onnxg embed --ray``: the chunks of ``onnxg embed`` spread over Ray actors, results in order.

The command reads its input exactly as without Ray (same lines, same UTF-8 checks, same
chunks of ``CHUNK_LINES``) and ships each chunk to one of ``workers`` actors that hold the
model; results come back in input order with at most two chunks queued per actor, so memory
stays bounded on any input size and the input file needs to exist only where the command
runs. The same chunks and batch size on the same model make the vectors bit-identical to a
single-process run.

Why actors and not Ray Data: ``read_text`` on one file reads it in one task (one block unless
``override_num_blocks``, which still splits after the read), its line rules differ from
``onnxg embed``'s (BOM, ``\\r\\n``, whitespace-only lines, UTF-8 errors with line numbers), and
the input would have to be readable on every node.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxg.runtime.errors import OnnxgError

READY_TIMEOUT_S = 300.0
QUEUED_PER_WORKER = 2


@dataclass(frozen=True)
class Info:
    dimensions: int
    multi_vector: bool


class Embedder:
    """One Ray actor: the embedding model, loaded once."""

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        from onnxg.runtime import loading

        self.model = loading.load_embedding(Path(path), **options)

    def info(self) -> Info:
        return Info(int(self.model.dimensions), bool(getattr(self.model, "multi_vector", False)))

    def embed(self, chunk: list[str], batch_size: int) -> Any:
        return self.model.embed(chunk, batch_size=batch_size)


class Pool:
    def __init__(self, actors: list[Any], info: Info, batch_size: int) -> None:
        self.actors, self.info, self.batch_size = actors, info, batch_size

    def embed_in_order(self, chunks: Iterator[list[str]]) -> Iterator[tuple[list[str], Any]]:
        """(chunk, result) per chunk, in input order; chunks go round-robin to the actors."""
        import ray

        pending: deque[tuple[list[str], Any]] = deque()
        for index, chunk in enumerate(chunks):
            pending.append((chunk, self.actors[index % len(self.actors)].embed.remote(chunk, self.batch_size)))
            if len(pending) >= QUEUED_PER_WORKER * len(self.actors):
                done, ref = pending.popleft()
                yield done, ray.get(ref)
        while pending:
            done, ref = pending.popleft()
            yield done, ray.get(ref)


@contextlib.contextmanager
def pool(path: Path, options: dict[str, Any], batch_size: int, workers: int, address: str | None,
         worker_cpus: float = 1.0) -> Iterator[Pool]:
    """``workers`` actors with the model at ``path`` (a folder that exists on every node)."""
    from onnxg.cluster import ray_session

    options = dict(options)
    if options.get("threads") is None:  # one model per reserved CPU, not every core per model
        options["threads"] = max(1, int(worker_cpus))
    cpus = max(os.cpu_count() or 1, math.ceil(workers * worker_cpus) + 1)  # +1: the reading driver
    with ray_session.session(address, num_cpus=cpus) as _session:
        import ray

        actor = ray.remote(num_cpus=worker_cpus, max_restarts=0)(Embedder)
        actors = [actor.remote(str(path), options) for _ in range(workers)]
        try:
            infos = [a.info.remote() for a in actors]
            ready, _ = ray.wait(infos, num_returns=len(infos), timeout=READY_TIMEOUT_S)
            if len(ready) < len(infos):
                raise OnnxgError(f"only {len(ready)} of {workers} Ray workers started within {READY_TIMEOUT_S:.0f} s",
                                 hint="the cluster may lack free CPUs: lower --workers")
            yield Pool(actors, ray.get(infos[0]), batch_size)
        finally:
            for a in actors:
                ray.kill(a)
