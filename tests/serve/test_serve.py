"""The HTTP API over the demo collection: search by text and image, clear errors for bad input."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lamra import LamRA
from lamra.collection import read_collection
from lamra.demo import DEMO_DIR
from lamra.collection import embed_collection
from lamra.serve.app import create_app


@pytest.fixture(scope="module")
def client(compact_backbone):
    model = LamRA(compact_backbone, compact_backbone)
    records = read_collection(DEMO_DIR / "collection.jsonl")[:6]
    return TestClient(create_app(model, embed_collection(model, records, DEMO_DIR, show_progress=False)))


def image_b64(name: str) -> str:
    return base64.b64encode((DEMO_DIR / name).read_bytes()).decode()


def test_health_and_page(client):
    health = client.get("/health").json()
    assert health["items"] == 6 and health["numerics"] in ("float32", "bf16 autocast")
    assert "LamRA search" in client.get("/").text


def test_search_by_text_and_image(client):
    hits = client.post("/search", json={"txt": "a cat", "top_k": 3}).json()["hits"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    by_image = client.post("/search", json={"image": image_b64("1f431.png"), "top_k": 6}).json()["hits"]
    # the query image is in the collection: it must come first
    assert by_image[0]["id"] == "g-1f431"


def test_search_with_query_expansion(client):
    response = client.post("/search", json={"txt": "a cheesy slice of Italian food", "top_k": 3, "expand": 2})
    assert response.status_code == 200, response.text
    assert len(response.json()["hits"]) == 3


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
    assert vectors["similarity"] == "cosine"  # no appearance channel on this model
    assert "item 1" in client.post("/encode", json={"items": [{"txt": "a"}, {}]}).json()["detail"]


@pytest.fixture(scope="module")
def strict_client(compact_backbone):
    from lamra.serve.app import ServerLimits

    model = LamRA(compact_backbone)
    records = read_collection(DEMO_DIR / "collection.jsonl")[:3]
    limits = ServerLimits(max_body_bytes=4096, max_encode_items=2, max_top_k=3, max_image_pixels=40 * 40)
    return TestClient(create_app(model, embed_collection(model, records, DEMO_DIR, show_progress=False), limits))


def bomb_b64() -> str:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")  # 64M pixels, ~60 kB compressed
    return base64.b64encode(buffer.getvalue()).decode()


# (route, body, status, words the JSON detail must hold): every hostile input gets a 4xx, none a 500
HOSTILE = [
    ("/search", {"image": 12345}, 422, "'image' must be a base64 string, got int"),
    ("/search", {"image": bomb_b64()}, 422, "8000x8000 pixels, more than the limit"),
    ("/search", {"txt": "a cat", "instruction": ["x"]}, 422, "'instruction' must be a string, got list"),
    ("/search", {"txt": "a cat", "rerank": "pointwise", "rerank_weight": "heavy"}, 422, "'rerank_weight' must be a number"),
    ("/search", '{"txt": "a \\ud800 cat"}', 422, "not valid Unicode"),  # raw JSON: a lone surrogate escape
    ("/search", {"txt": "a cat", "top_k": True}, 422, "'top_k' must be an integer"),
    ("/search", {"txt": "a cat", "rerank": 3}, 422, "'rerank' must be a string, got int"),
    ("/search", {"txt": "a cat", "expand": -1}, 422, "'expand' must be an integer in 0.."),
    ("/search", {"txt": "a cat", "expand": 2, "expand_weight": "far"}, 422, "'expand_weight': query expansion weight='far': must be a finite number >= 0"),
    ("/encode", {"items": ["a cat"]}, 422, "item 0: must be an object with 'txt' and/or 'image', got str"),
    ("/encode", {"items": [{"txt": "a"}], "instruction": 7}, 422, "'instruction' must be a string, got int"),
]


@pytest.mark.parametrize("route, body, status, detail", HOSTILE, ids=[f"{r} {d[:30]}" for r, _, _, d in HOSTILE])
def test_hostile_requests_get_a_4xx_that_names_the_field(client, route, body, status, detail):
    if isinstance(body, str):
        response = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(route, json=body)
    assert response.status_code == status and detail in response.json()["detail"]


def test_server_limits_are_enforced(strict_client):
    big = strict_client.post("/search", json={"txt": "x" * 5000})
    assert big.status_code == 413 and "over the limit of 4,096 bytes" in big.json()["detail"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield b'{"txt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    chunked = strict_client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "over the limit" in chunked.json()["detail"]
    many = strict_client.post("/encode", json={"items": [{"txt": "a"}] * 3})
    assert many.status_code == 413 and "limit of 2 per request" in many.json()["detail"]
    assert strict_client.post("/search", json={"txt": "a", "top_k": 4}).status_code == 422
    assert strict_client.post("/search", json={"txt": "a", "top_k": 3}).status_code == 200
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (50, 50), "red").save(buffer, format="PNG")  # 2,500 pixels > 40x40, a few hundred bytes
    big_image = strict_client.post("/search", json={"image": base64.b64encode(buffer.getvalue()).decode(), "top_k": 1})
    assert big_image.status_code == 422 and "more than the limit of 1,600" in big_image.json()["detail"]


def test_lamra_serve_refuses_a_non_positive_limit():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lamra.cli", "serve", "--max-top-k", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "must be positive" in result.stderr and "Traceback" not in result.stderr


def test_the_page_never_renders_a_detail_as_html():
    page = (Path(create_app.__code__.co_filename).parent / "page.html").read_text()
    assert "innerHTML = `" not in page and "li.textContent = typeof result.detail" in page


def test_serving_an_index_searches_it_without_encoding_its_pool(compact_backbone, tmp_path, monkeypatch):
    import json
    import shutil

    from lamra.collection import open_indexed_collection
    from lamra.index_pool import index_pool

    model = LamRA(compact_backbone, compact_backbone)
    pool = tmp_path / "mbeir" / "cand_pool" / "local" / "pool.jsonl"
    pool.parent.mkdir(parents=True)
    (tmp_path / "mbeir" / "images").mkdir()
    records = read_collection(DEMO_DIR / "collection.jsonl")[:4]
    for record in records:
        shutil.copy(DEMO_DIR / record["img_path"], tmp_path / "mbeir" / "images" / record["img_path"])
    pool.write_text("".join(json.dumps({"did": f"9:{n}", "img_path": f"images/{r['img_path']}", "txt": "",
                                        "modality": "image"}) + "\n" for n, r in enumerate(records)))
    index_pool(model, pool, tmp_path / "index", model_name="compact", show_progress=False)
    monkeypatch.setattr(model, "encode", lambda items, **k: pytest.fail("the pool was encoded again")
                        if len(items) > 1 else LamRA.encode(model, items, **k))
    served = TestClient(create_app(model, open_indexed_collection(tmp_path / "index", "compact")))
    assert served.get("/health").json()["items"] == 4
    hits = served.post("/search", json={"image": image_b64(records[2]["img_path"]), "top_k": 4}).json()["hits"]
    assert hits[0]["id"] == "9:2" and hits[0]["n"] == 2 and hits[0]["has_image"]  # the query image itself
    assert served.get(f"/items/{hits[0]['n']}/image").content == (DEMO_DIR / records[2]["img_path"]).read_bytes()
    reranked = served.post("/search", json={"txt": "a cat", "top_k": 2, "rerank": "pointwise"})
    assert reranked.status_code == 200 and len(reranked.json()["hits"]) == 2
