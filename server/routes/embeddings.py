"""POST /v1/embeddings: strings or token-id arrays to vectors, as floats or base64."""

from __future__ import annotations

import base64
from typing import Any

import anyio.to_thread
import msgspec
import numpy as np
from litestar import Request, Response, post

from onnxg.runtime import pooling
from onnxg.server.errors import decode, invalid
from onnxg.server.protocol import ENCODER, Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from onnxg.server.services import Services

MAX_INPUTS = 2048  # OpenAI's limit per request
BATCH_SIZE = 32


def parse_input(value: str | list[Any]) -> tuple[list[str] | None, list[list[int]] | None]:
    """(texts, None) or (None, token id lists); 400 naming ``input`` otherwise."""
    if isinstance(value, str):
        value = [value]
    if not value:
        raise invalid("'input' must not be empty.", param="input")
    if len(value) > MAX_INPUTS:
        raise invalid(f"'input' holds {len(value)} items; at most {MAX_INPUTS} per request.", param="input")
    if all(isinstance(v, str) for v in value):
        if any(v == "" for v in value):
            raise invalid("'input' must not contain empty strings.", param="input")
        return value, None
    if all(_is_token(v) for v in value):
        return None, [value]
    if all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
        return None, value
    raise invalid(
        "'input' must be a string, a list of strings, a list of token ids, or a list of token-id lists.",
        param="input",
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shape(vectors: Any, dimensions: int | None) -> np.ndarray:
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise invalid("This model gives several vectors per input; /v1/embeddings serves one per input.", param="model")
    return pooling.keep_dimensions(vectors.astype(np.float32, copy=False), dimensions)


def encode_rows(vectors: np.ndarray, fmt: str) -> list[Any]:
    """Each row as the response holds it: base64 of little-endian float32, or a JSON array
    already encoded (``pooling.vector_json``) that the response's encoder copies as it is."""
    if fmt == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    return [msgspec.Raw(pooling.vector_json(row)) for row in vectors]


@post(
    "/embeddings",
    status_code=200,
    operation_id="createEmbedding",
    summary="Create embeddings (float or base64 little-endian float32; optional dimensions).",
    tags=["Embeddings"],
)
async def embeddings(request: Request, services: Services) -> Response:
    registry, slots, metrics = services.registry, services.slots, services.metrics
    req: EmbeddingRequest = decode(await request.body(), EmbeddingRequest)
    model_id, model = registry.embedding_model(req.model)
    texts, ids = parse_input(req.input)
    pooling.check_dimensions(req.dimensions, int(model.dimensions))  # before spending a slot on it
    fmt = req.encoding_format or "float"

    def answer() -> tuple[bytes, int]:
        """The model call and the response body, in one worker thread (the vectors are
        encoded where they were made; the event loop only sends the bytes)."""
        result = model.embed(texts, batch_size=BATCH_SIZE) if texts is not None else \
            model.embed_tokens(ids, batch_size=BATCH_SIZE)  # type: ignore[arg-type]
        rows = encode_rows(shape(result.vectors, req.dimensions), fmt)
        tokens = int(sum(result.token_counts))
        body = EmbeddingList(object="list", data=[Embedding("embedding", i, row) for i, row in enumerate(rows)],
                             model=model_id, usage=EmbeddingUsage(tokens, tokens))
        return ENCODER.encode(body), tokens

    slot = slots.acquire()
    try:
        body, tokens = await anyio.to_thread.run_sync(answer)
    finally:
        slot.release()
    metrics.tokens(model_id, tokens, 0)
    return Response(body, media_type="application/json", status_code=200)
