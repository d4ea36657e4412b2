"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from litestar import Response, get

from onnxg.runtime.contracts import Model as ServedModel
from onnxg.server.protocol import ENCODER, Model, ModelList
from onnxg.server.registry import unknown_model
from onnxg.server.services import Services

OWNER = "onnxg"


def describe(model_id: str, model: ServedModel, created: int) -> Model:
    if model.kind == "chat":
        family = model.tool_family
        return Model(id=model_id, object="model", created=created, owned_by=OWNER, kind=model.kind,
                     context_length=int(model.context_length),
                     tool_calls=family.name if family is not None else None,
                     structured_output=family is not None)
    return Model(id=model_id, object="model", created=created, owned_by=OWNER, kind=model.kind,
                 context_length=int(model.max_length), dimensions=int(model.dimensions))


@get("/models", operation_id="listModels", summary="List the models this server serves.", tags=["Models"])
async def list_models(services: Services) -> Response:
    registry = services.registry
    data = [describe(i, registry.get(i), registry.created) for i in registry.ids]  # type: ignore[arg-type]
    return Response(ENCODER.encode(ModelList("list", data)), media_type="application/json")


@get("/models/{model_id:path}", operation_id="retrieveModel", summary="Describe one served model.", tags=["Models"])
async def retrieve_model(model_id: str, services: Services) -> Response:
    registry = services.registry
    model_id = model_id.lstrip("/")
    model = registry.get(model_id)
    if model is None:
        raise unknown_model(model_id, registry.ids)
    return Response(ENCODER.encode(describe(model_id, model, registry.created)), media_type="application/json")
