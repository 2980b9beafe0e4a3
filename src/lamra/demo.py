"""``lamra demo``: encode the bundled emoji collection and answer a text and an image query."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

DEMO_DIR = Path(str(resources.files("lamra") / "assets" / "demo"))
TEXT_QUERY = "a cheesy slice of Italian food"
IMAGE_QUERY = "twitter-1f431.png"  # the cat face as Twitter draws it; the collection has Google's


def load_collection() -> list[dict]:
    with open(DEMO_DIR / "collection.jsonl") as lines:
        return [json.loads(line) for line in lines]


def run_demo(model, top_k: int = 3, echo=print) -> dict[str, list]:
    """Search the collection with one text and one image query; returns and prints the hits."""
    collection = load_collection()
    corpus = [DEMO_DIR / record["img_path"] for record in collection]
    queries = {
        f"text:  {TEXT_QUERY!r}": (TEXT_QUERY, "Retrieve the image that matches the description."),
        f"image: {IMAGE_QUERY}": (DEMO_DIR / IMAGE_QUERY, "Find the same emoji drawn in another style."),
    }
    corpus_vectors = model.encode(corpus, batch_size=16, show_progress=True)
    results = {}
    for title, (query, instruction) in queries.items():
        query_vector = model.encode([query], instruction=instruction)[0]
        scores = corpus_vectors @ query_vector
        ranked = scores.argsort()[::-1][:top_k]
        results[title] = [(collection[i]["label"], float(scores[i])) for i in ranked]
        echo(f"\n{title}")
        for rank, i in enumerate(ranked, start=1):
            echo(f"  {rank}. {collection[i]['label']:<16} {scores[i]:.3f}  ({collection[i]['img_path']})")
    return results
