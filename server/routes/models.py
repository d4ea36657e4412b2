"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from litestar import Response, get

from onnxg.server.protocol import ENCODER, Model, ModelList
from onnxg.server.registry import Registry, unknown_model

OWNER = "onnxg"


@get("/models", operation_id="listModels", summary="List the models this server serves.", tags=["Models"])
async def list_models(registry: Registry) -> Response:
    data = [Model(i, "model", registry.created, OWNER) for i in registry.ids]
    return Response(ENCODER.encode(ModelList("list", data)), media_type="application/json")


@get("/models/{model_id:path}", operation_id="retrieveModel", summary="Describe one served model.", tags=["Models"])
async def retrieve_model(model_id: str, registry: Registry) -> Response:
    model_id = model_id.lstrip("/")
    if model_id not in registry.ids:
        raise unknown_model(model_id, registry.ids)
    return Response(ENCODER.encode(Model(model_id, "model", registry.created, OWNER)), media_type="application/json")
