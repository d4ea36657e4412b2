"""``Services``: what the route handlers are given, as one dependency.

The models (``Registry``), the concurrency slots (``Slots``) and the metrics (``Metrics``)
reach a handler together: Litestar resolves two or more dependencies of a handler
concurrently, in an anyio task group, which cost ~0.1 ms per request (a tenth of what
``/v1/embeddings`` added to a 32-sentence model call); one dependency costs a function call.
``server/app.py`` builds the one instance once the models are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxg.server.limits import Slots
from onnxg.server.metrics import Metrics
from onnxg.server.registry import Registry


@dataclass(frozen=True)
class Services:
    registry: Registry
    slots: Slots
    metrics: Metrics
