"""``lamra serve``: an HTTP API (and a small web page) over one model and one collection.

Endpoints:
- ``GET  /``                  a search page (text and/or image query, optional rerank)
- ``GET  /health``            model and collection sizes
- ``POST /encode``            ``{"items": [{"txt": ..., "image": <base64>}], "instruction": ...}`` -> vectors
- ``POST /search``            ``{"txt": ..., "image": <base64>, "top_k": 5, "rerank": null}`` -> hits
- ``GET  /items/{n}/image``   a collection item's image

The collection's embeddings are computed once at start-up (or loaded from a saved index).
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

from lamra.collection import record_id
from lamra.items import InputError, load_image

MAX_TOP_K = 100


@dataclass
class Collection:
    records: list[dict]
    image_root: Path
    vectors: np.ndarray

    def item(self, n: int) -> dict:
        record = self.records[n]
        return {"txt": record.get("txt") or "", "img_path": record.get("img_path")}


def embed_collection(model, records: list[dict], image_root: Path, show_progress: bool = True) -> Collection:
    items = [{"txt": r.get("txt") or "", "img_path": r.get("img_path")} for r in records]
    vectors = model.encode(items, image_root=image_root, show_progress=show_progress)
    return Collection(records, image_root, vectors)


def decode_image(data: str, what: str) -> Image.Image:
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.copy()
    except (binascii.Error, ValueError) as error:
        raise InputError(f"{what}: not valid base64 ({error})") from None
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{what}: not a readable image ({error})") from None


def request_item(body: dict[str, Any], what: str) -> Any:
    """A query/item from JSON: text, a base64 image, or both (image shown first)."""
    text = body.get("txt")
    if text is not None and not isinstance(text, str):
        raise InputError(f"{what}: 'txt' must be a string")
    image = decode_image(body["image"], what) if body.get("image") else None
    if image is not None and text:
        return (text, image)
    if image is not None:
        return image
    if text and text.strip():
        return text
    raise InputError(f"{what}: give 'txt' and/or 'image'")


def create_app(model, collection: Collection):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    app = FastAPI(title="LamRA", description="Universal multimodal retrieval with a large multimodal model.")

    def bad_input(error: InputError):
        return HTTPException(status_code=422, detail=str(error))

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (Path(__file__).parent / "page.html").read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "items": len(collection.records), "dims": int(collection.vectors.shape[1]),
                "backbone": model.backbone.kind, "reranker": model.reranker is not None}

    @app.post("/encode")
    def encode(body: dict) -> dict:
        raw = body.get("items")
        if not isinstance(raw, list) or not raw:
            raise HTTPException(status_code=422, detail="'items' must be a non-empty list")
        try:
            items = [request_item(item, f"item {i}") for i, item in enumerate(raw)]
            vectors = model.encode(items, instruction=body.get("instruction"))
        except InputError as error:
            raise bad_input(error) from None
        return {"embeddings": vectors.tolist()}

    @app.post("/search")
    def search(body: dict) -> dict:
        top_k = body.get("top_k", 5)
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise HTTPException(status_code=422, detail=f"'top_k' must be an integer in 1..{MAX_TOP_K}")
        mode = body.get("rerank")
        if mode and model.reranker is None:
            raise HTTPException(status_code=422, detail="this server's model has no reranker")
        try:
            query = request_item(body, "query")
            vector = model.encode([query], instruction=body.get("instruction") or None)[0]
            scores = collection.vectors @ vector
            order = [int(i) for i in np.argsort(-scores, kind="stable")[:top_k]]
            if mode:
                hits = model.rerank(query, [collection.item(i) for i in order], retrieval_scores=scores[order],
                                    mode=mode, ids=order, image_root=collection.image_root,
                                    weight=float(body.get("rerank_weight", 1.0)))
                ranked = [(h.id, h.score) for h in hits]
            else:
                ranked = [(i, float(scores[i])) for i in order]
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
