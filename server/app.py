"""``create_app(settings)``: the Litestar app behind ``onnxg serve``.

Models load once, in the lifespan hook (warm-up included), and reach the handlers by
dependency injection; nothing lives in module globals. Every error leaves as OpenAI's error
JSON (``errors.handle``); /v1 needs the API key when one is set; CORS only for the origins
given. ``GET /`` serves the chat page (routes/ui.py) unless ``settings.ui`` is off.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from onnxg import __version__
from onnxg.runtime.contracts import Model
from onnxg.server import errors, protocol
from onnxg.server import metrics as metrics_mod
from onnxg.server.limits import Slots
from onnxg.server.metrics import Metrics
from onnxg.server.registry import Registry, load, plan
from onnxg.server.routes import chat, completions, embeddings, health, ui
from onnxg.server.routes import models as model_routes
from onnxg.server.services import Services
from onnxg.server.settings import Settings

log = logging.getLogger("onnxg.server")

# operationId -> (request body, 200 body): Litestar sees raw bodies (we decode them
# ourselves, strictly), so the schema at /openapi.json gets the wire types patched in.
WIRE_TYPES: dict[str, tuple[type | None, type]] = {
    "createChatCompletion": (protocol.ChatCompletionRequest, protocol.ChatCompletion),
    "createCompletion": (protocol.CompletionRequest, protocol.Completion),
    "createEmbedding": (protocol.EmbeddingRequest, protocol.EmbeddingList),
    "listModels": (None, protocol.ModelList),
    "retrieveModel": (None, protocol.Model),
}


class StartupState:
    """What the CLI reads back after uvicorn returns: the error that stopped start-up."""

    def __init__(self) -> None:
        self.error: BaseException | None = None


def _api_key_guard(key: str) -> Any:
    digest = hashlib.sha256(key.encode()).digest()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        header = connection.headers.get("authorization", "")
        scheme, _sep, token = header.partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        # Hash both sides so compare_digest sees equal lengths: the time taken says
        # nothing about the key, not even its length.
        if not (hmac.compare_digest(given, digest) and scheme.lower() == "bearer"):
            raise errors.unauthorized()

    return guard


def create_app(settings: Settings, startup: StartupState | None = None, *,
               models: Sequence[Model] | None = None) -> Litestar:
    """The app serving ``models`` (already built, e.g. by the Python API or a test's fakes,
    each under its ``name``) or else the folders of ``settings.models``, loaded at start-up."""
    startup = startup or StartupState()
    planned = plan(settings.models) if models is None else []

    def build() -> Registry:
        if models is None:
            return load(planned, threads=settings.threads, warmup=settings.warmup, kv_cache_mb=settings.kv_cache_mb)
        registry = Registry.of(models)
        if settings.warmup:
            registry.warmup()
        return registry

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            registry = await anyio.to_thread.run_sync(build)
        except BaseException as exc:
            startup.error = exc
            raise
        app.state.registry = registry
        app.state.services = Services(registry, app.state.slots, app.state.metrics)
        try:
            yield
        finally:
            registry.close()

    @get("/openapi.json", include_in_schema=False)
    async def openapi_json(request: Request) -> Response:
        cached = getattr(request.app.state, "openapi_bytes", None)
        if cached is None:
            cached = msgspec.json.encode(_openapi(request.app))
            request.app.state.openapi_bytes = cached
        return Response(cached, media_type="application/json")

    v1 = Router(
        path="/v1",
        route_handlers=[
            model_routes.list_models,
            model_routes.retrieve_model,
            chat.chat_completions,
            completions.completions,
            embeddings.embeddings,
        ],
        guards=[_api_key_guard(settings.api_key)] if settings.api_key else None,
    )
    pages = ui.route_handlers if settings.ui else []
    app = Litestar(
        route_handlers=[v1, health.health, health.metrics_text, openapi_json, *pages],
        lifespan=[lifespan],
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
        },
        exception_handlers={Exception: errors.handle},
        middleware=[metrics_mod.middleware],
        cors_config=_cors(settings.cors_origins),
        openapi_config=OpenAPIConfig(
            title="onnxg",
            version=__version__,
            description="OpenAI-compatible chat, completions and embeddings on ONNX Runtime.",
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state.slots = Slots(settings.max_concurrency)
    app.state.metrics = Metrics()
    if settings.ui:
        app.state.ui = ui.load()
    return app


def _services(state: State) -> Services:
    return state.services  # type: ignore[no-any-return]


def _cors(origins: list[str]) -> CORSConfig | None:
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
    )


def _openapi(app: Litestar) -> dict[str, Any]:
    schema = app.openapi_schema.to_schema()
    types = [t for pair in WIRE_TYPES.values() for t in pair if t is not None]
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    by_type = dict(zip(types, refs, strict=True))
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or operation.get("operationId") not in WIRE_TYPES:
                continue
            request, response = WIRE_TYPES[operation["operationId"]]
            if request is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": by_type[request]}},
                }
            ok = operation.setdefault("responses", {}).setdefault("200", {"description": "OK"})
            ok["content"] = {"application/json": {"schema": by_type[response]}}
            if operation["operationId"] in ("createChatCompletion", "createCompletion"):
                ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return schema
