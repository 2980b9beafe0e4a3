"""The HTTP API over the demo collection: search by text and image, clear errors for bad input."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from lamra import LamRA
from lamra.collection import read_collection
from lamra.demo import DEMO_DIR
from lamra.serve.app import create_app, embed_collection


@pytest.fixture(scope="module")
def client(compact_backbone):
    model = LamRA(compact_backbone, compact_backbone)
    records = read_collection(DEMO_DIR / "collection.jsonl")[:6]
    return TestClient(create_app(model, embed_collection(model, records, DEMO_DIR, show_progress=False)))


def image_b64(name: str) -> str:
    return base64.b64encode((DEMO_DIR / name).read_bytes()).decode()


def test_health_and_page(client):
    assert client.get("/health").json()["items"] == 6
    assert "LamRA search" in client.get("/").text


def test_search_by_text_and_image(client):
    hits = client.post("/search", json={"txt": "a cat", "top_k": 3}).json()["hits"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    by_image = client.post("/search", json={"image": image_b64("1f431.png"), "top_k": 6}).json()["hits"]
    # the query image is in the collection: it must come first
    assert by_image[0]["id"] == "g-1f431"


def test_search_with_rerank(client):
    hits = client.post("/search", json={"txt": "a dog", "top_k": 3, "rerank": "pointwise"}).json()["hits"]
    assert len(hits) == 3


def test_item_image_served(client):
    assert client.get("/items/0/image").headers["content-type"] == "image/png"
    assert client.get("/items/99/image").status_code == 404


@pytest.mark.parametrize("body, message", [
    ({"top_k": 3}, "give 'txt' and/or 'image'"),
    ({"txt": "   "}, "give 'txt' and/or 'image'"),
    ({"image": "not base64!!"}, "not valid base64"),
    ({"image": base64.b64encode(b"not an image").decode()}, "not a readable image"),
    ({"txt": "x", "top_k": 0}, "top_k"),
    ({"txt": 5}, "must be a string"),
])
def test_bad_requests_get_clear_errors(client, body, message):
    response = client.post("/search", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_encode_endpoint(client):
    vectors = client.post("/encode", json={"items": [{"txt": "a"}, {"image": image_b64("1f436.png")}]}).json()
    assert len(vectors["embeddings"]) == 2 and len(vectors["embeddings"][0]) == 576
    assert "item 1" in client.post("/encode", json={"items": [{"txt": "a"}, {}]}).json()["detail"]
