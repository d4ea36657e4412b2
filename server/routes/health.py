"""GET /health (no API key: for load balancers), GET /metrics (Prometheus text)."""

from __future__ import annotations

from litestar import Response, get

from onnxg.server.metrics import Metrics, model_gauges
from onnxg.server.protocol import ENCODER, Health
from onnxg.server.registry import Registry


@get("/health", summary="200 once every model is loaded and warm.", tags=["Service"])
async def health(registry: Registry) -> Response:
    return Response(ENCODER.encode(Health("ok", registry.ids)), media_type="application/json")


@get("/metrics", summary="Prometheus metrics.", tags=["Service"])
async def metrics_text(metrics: Metrics, registry: Registry) -> Response:
    text = metrics.render() + model_gauges(registry.chat)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
