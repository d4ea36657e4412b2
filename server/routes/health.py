"""GET /health (no API key: for load balancers), GET /metrics (Prometheus text)."""

from __future__ import annotations

from litestar import Response, get

from onnxg.server.metrics import model_gauges
from onnxg.server.protocol import ENCODER, Health
from onnxg.server.services import Services


@get("/health", summary="200 once every model is loaded and warm.", tags=["Service"])
async def health(services: Services) -> Response:
    return Response(ENCODER.encode(Health("ok", services.registry.ids)), media_type="application/json")


@get("/metrics", summary="Prometheus metrics.", tags=["Service"])
async def metrics_text(services: Services) -> Response:
    text = services.metrics.render() + model_gauges(services.registry.chat)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
