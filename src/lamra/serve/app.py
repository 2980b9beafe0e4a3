"""``lamra serve``: an HTTP API (and a small web page) over one model and one collection.

Endpoints:
- ``GET  /``                  a search page (text and/or image query, optional rerank)
- ``GET  /health``            model, collection size, similarity and numerics (float32 / bf16 autocast)
- ``POST /encode``            ``{"items": [{"txt": ..., "image": <base64>}], "instruction": ..., "role": "query"|"document"}``
                              -> ``{"embeddings": [...], "similarity": "cosine"|"dot"}`` (how to compare them)
- ``POST /search``            ``{"txt": ..., "image": <base64>, "top_k": 5, "rerank": null, "expand": 0}`` -> hits
                              (``expand``/``expand_weight``: query expansion, ``lamra.query_expansion``)
- ``GET  /items/{n}/image``   a collection item's image

The collection's embeddings are computed once at start-up, or read from an index ``lamra index`` built
(``lamra serve --index``).

Limits (``ServerLimits``, all configurable): request body bytes, items per ``/encode``, ``top_k`` and
image pixels (checked from the image header, before decoding). Every bad request is a 4xx with a
JSON ``detail`` that names the field; none reaches the model.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from lamra.collection import EmbeddedCollection, IndexedCollection, record_id
from lamra.evaluate.environment import numerics
from lamra.items import MAX_IMAGE_PIXELS, InputError, check_image_size, load_image
from lamra.query_expansion import QueryExpansion

MAX_TOP_K = 100


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 16 * 1024 * 1024  # a few large base64 images
    max_encode_items: int = 64
    max_top_k: int = MAX_TOP_K
    max_image_pixels: int = MAX_IMAGE_PIXELS  # checked from the header, before an image is decoded


class BodySizeLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before it is read whole (by its
    Content-Length, or by counting a chunked body as it arrives)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # raised inside the route's body read: FastAPI answers it as a 413
                from fastapi import HTTPException

                raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, counted, send)

    @property
    def message(self) -> str:
        return f"request body over the limit of {self.limit:,} bytes"

    async def _refuse(self, send):
        import json

        body = json.dumps({"detail": self.message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def decode_image(data: Any, what: str, max_pixels: int | None = None) -> Image.Image:
    if not isinstance(data, str):
        raise InputError(f"{what}: 'image' must be a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"{what}: not valid base64 ({error})") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            check_image_size(image, f"of {what}", max_pixels)  # from the header, before decoding
            image.load()
            return image.copy()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"{what}: not a readable image ({error})") from None


def request_item(body: Any, what: str, max_pixels: int | None = None) -> Any:
    """A query/item from JSON: text, a base64 image, or both (image shown first)."""
    if not isinstance(body, dict):
        raise InputError(f"{what}: must be an object with 'txt' and/or 'image', got {type(body).__name__}")
    text = body.get("txt")
    if text is not None and not isinstance(text, str):
        raise InputError(f"{what}: 'txt' must be a string")
    image = decode_image(body["image"], what, max_pixels) if body.get("image") else None
    if image is not None and text:
        return (text, image)
    if image is not None:
        return image
    if text and text.strip():
        return text
    raise InputError(f"{what}: give 'txt' and/or 'image'")


def optional_string(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"'{key}' must be a string, got {type(value).__name__}")
    return value or None


def create_app(model, collection: EmbeddedCollection | IndexedCollection, limits: ServerLimits = ServerLimits()):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    app = FastAPI(title="LamRA", description="Universal multimodal retrieval with a large multimodal model.")
    app.add_middleware(BodySizeLimit, limit=limits.max_body_bytes)

    def bad_input(error: InputError):
        return HTTPException(status_code=422, detail=str(error))

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (Path(__file__).parent / "page.html").read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "items": len(collection.records), "dims": collection.dims,
                "backbone": model.backbone.kind, "reranker": model.has_reranker, "similarity": model.similarity,
                "numerics": numerics(model)}

    @app.post("/encode")
    def encode(body: dict) -> dict:
        raw = body.get("items")
        if not isinstance(raw, list) or not raw:
            raise HTTPException(status_code=422, detail="'items' must be a non-empty list")
        if len(raw) > limits.max_encode_items:
            raise HTTPException(status_code=413, detail=f"{len(raw)} items, more than the limit of "
                                                        f"{limits.max_encode_items} per request")
        try:
            items = [request_item(item, f"item {i}", limits.max_image_pixels) for i, item in enumerate(raw)]
            role = optional_string(body, "role") or "query"
            vectors = model.encode(items, instruction=optional_string(body, "instruction"), role=role)
        except InputError as error:
            raise bad_input(error) from None
        return {"embeddings": vectors.tolist(), "similarity": model.similarity}

    @app.post("/search")
    def search(body: dict) -> dict:
        top_k = body.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limits.max_top_k:
            raise HTTPException(status_code=422, detail=f"'top_k' must be an integer in 1..{limits.max_top_k}")
        weight = body.get("rerank_weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight):
            raise HTTPException(status_code=422, detail=f"'rerank_weight' must be a number, got {weight!r:.40}")
        expand = body.get("expand", 0)
        if isinstance(expand, bool) or not isinstance(expand, int) or not 0 <= expand <= limits.max_top_k:
            raise HTTPException(status_code=422, detail=f"'expand' must be an integer in 0..{limits.max_top_k}")
        try:
            expansion = QueryExpansion(top=expand, weight=body.get("expand_weight", 2.0)) if expand else None
        except ValueError as error:  # the weight: QueryExpansion names what it needs
            raise HTTPException(status_code=422, detail=f"'expand_weight': {error}") from None
        try:
            mode = optional_string(body, "rerank")
            if mode and not model.has_reranker:
                raise InputError("this server's model has no reranker")
            query = request_item(body, "query", limits.max_image_pixels)
            hits = collection.search(model, [query], instruction=optional_string(body, "instruction"), top_k=top_k,
                                     rerank=mode, rerank_top_k=top_k, rerank_weight=float(weight),
                                     query_expansion=expansion)[0]
            ranked = [(int(h.id), h.score) for h in hits]
        except InputError as error:
            raise bad_input(error) from None
        return {"hits": [
            {"n": i, "id": record_id(collection.records[i], i), "score": score,
             "txt": collection.records[i].get("txt"), "has_image": bool(collection.records[i].get("img_path"))}
            for i, score in ranked
        ]}

    @app.get("/items/{n}/image")
    def item_image(n: int):
        if not 0 <= n < len(collection.records) or not collection.records[n].get("img_path"):
            raise HTTPException(status_code=404, detail=f"item {n} has no image")
        path = collection.image_root / collection.records[n]["img_path"]
        try:
            load_image(collection.records[n]["img_path"], collection.image_root)  # refuses escapes
        except InputError as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        return FileResponse(path)

    return app
