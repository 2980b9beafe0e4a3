"""Reranking cost per query with the shipped compact LamRA-Rank (the paper's Table 8, in seconds).

Pointwise over the top 10 and top 50, each with the per-candidate prompts and with the shared prefix
(the query part run once per pass, packed with the candidates into one sequence,
``CompactBackbone.last_hidden_with_shared_prefix``), for three queries: the demo's bare text
query; the same text as an evaluation sends it to the reranker (the task instruction joined in front,
``rerank_query_item``); and an image query with its instruction (the demo's Twitter cat, EmojiVendor's
first instruction). What the shared prefix saves grows with the query part of the prompt, so the
three rows bracket what `lamra eval --rerank` sees. Listwise over the top 5, and over the top 10 in
sliding windows of 5 (stride 2: four prompts, RankGPT's method), for the bare text query.
Candidates are the demo collection's images, repeated to 50. Each row is the median of --repeats
runs in this process, with its ratio to per-candidate pointwise at the same K and query and the
largest score difference from it. Retrieval quality is not measured here (results/ holds that); the
shared prefix changes no score.

    .venv/bin/python benchmarks/rerank.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from lamra import LamRA
from lamra.demo import DEMO_DIR, IMAGE_QUERY, TEXT_QUERY, load_collection
from lamra.items import to_segments
from lamra.prompts import format_mbeir_text


def timed(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = LamRA.from_pretrained()
    images = [to_segments(DEMO_DIR / record["img_path"]) for record in load_collection()]
    pool = (images * 4)[:50]
    # Joined as rerank_query_item joins an evaluation's query; the instructions are PocketBEIR's
    # (EmojiName's second paraphrase, EmojiVendor's first).
    queries = {
        "text": to_segments(TEXT_QUERY),
        "instruction + text": to_segments(format_mbeir_text(
            f"Retrieve the emoji image described by the given name. {TEXT_QUERY}")),
        "image + instruction": to_segments({"img_path": str(DEMO_DIR / IMAGE_QUERY),
                                            "txt": format_mbeir_text("Find the same emoji drawn in another style.")}),
    }
    query = queries["text"]
    reranker = model.reranker
    reranker.pointwise(query, pool[:2])  # warm-up: vision features cached, kernels loaded
    reranker.pointwise(queries["image + instruction"], pool[:2])

    print(f"shipped compact LamRA-Rank, precision {reranker.precision}, median of {args.repeats}\n")
    print("| query | method | K | s / query | ratio to per-candidate | max score difference |")
    print("|---|---|---:|---:|---:|---:|")
    for name, segments in queries.items():
        for k in (10, 50):
            base, whole = timed(args.repeats, lambda: reranker.pointwise(segments, pool[:k], shared_prefix=False))
            fast, shared = timed(args.repeats, lambda: reranker.pointwise(segments, pool[:k], shared_prefix=True))
            print(f"| {name} | pointwise, per candidate | {k} | {base:.2f} | 1.00x | 0 |")
            print(f"| {name} | pointwise, shared prefix | {k} | {fast:.2f} | {base / fast:.2f}x faster | "
                  f"{float(np.abs(shared - whole).max()):.1e} |")
    listwise, _ = timed(args.repeats, lambda: reranker.listwise(query, pool[:5], window=5))
    print(f"| text | listwise | 5 | {listwise:.2f} | | |")
    sliding, _ = timed(args.repeats, lambda: reranker.listwise(query, pool[:10], window=5, stride=2))
    print(f"| text | listwise, sliding windows of 5 | 10 | {sliding:.2f} | {sliding / listwise:.2f}x the top-5 listwise | |")


if __name__ == "__main__":
    main()
