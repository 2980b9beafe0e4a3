"""``lamra demo``: encode the bundled emoji collection and answer a text and an image query."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lamra.collection import embed_collection, read_collection

DEMO_DIR = Path(str(resources.files("lamra") / "assets" / "demo"))
TEXT_QUERY = "a cheesy slice of Italian food"
IMAGE_QUERY = "twitter-1f431.png"  # the cat face as Twitter draws it; the collection has Google's


def load_collection() -> list[dict]:
    return read_collection(DEMO_DIR / "collection.jsonl")


def run_demo(model, top_k: int = 3, echo=print) -> dict[str, list]:
    """Search the collection with one text and one image query; returns and prints the hits."""
    collection = load_collection()
    queries = {
        f"text:  {TEXT_QUERY!r}": (TEXT_QUERY, "Retrieve the image that matches the description."),
        f"image: {IMAGE_QUERY}": (DEMO_DIR / IMAGE_QUERY, "Find the same emoji drawn in another style."),
    }
    embedded = embed_collection(model, collection, DEMO_DIR)
    results = {}
    for title, (query, instruction) in queries.items():
        hits = embedded.search(model, [query], instruction=instruction, top_k=top_k)[0]
        results[title] = [(collection[h.id]["label"], h.score) for h in hits]
        echo(f"\n{title}")
        for rank, hit in enumerate(hits, start=1):
            record = collection[hit.id]
            echo(f"  {rank}. {record['label']:<16} {hit.score:.3f}  ({record['img_path']})")
    appearance, colour = model.retriever.appearance, model.retriever.colour
    echo("\nscore: the cosine of LamRA-Ret's embeddings" + (
        f", plus {appearance.weight:g} x the appearance cosine when query and item are both images (lamra.appearance)"
        if appearance is not None else "") + (
        ", plus how well the item's colours match the colours the query asks for (lamra.colour)"
        if colour is not None else ""))
    return results
