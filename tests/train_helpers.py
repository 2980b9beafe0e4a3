"""Shared set-up of the training tests: a small slice of the PocketBEIR fixture and recipe overrides."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lamra.pocketbeir.build import TEXTPAIRS_RELPATH, build_pocketbeir, default_sources_dir

SOURCES = default_sources_dir()
HAVE_SOURCES = (SOURCES / "emoji-datasource-google" / "emoji.json").is_file() and (SOURCES / "wordnet" / "data.noun").is_file()


def make_slice(out: Path, num_queries: int = 16, num_pairs: int = 16, extra_pool: int = 16) -> dict[str, str]:
    """Build the fixture and cut it to ``num_queries`` training queries (one per task first), a pool of
    their positives, listed negatives and ``extra_pool`` other candidates, and ``num_pairs`` text pairs."""
    root = build_pocketbeir(out / "pocketbeir", SOURCES, seed=0, fixture=True, show_progress=False)
    queries = [json.loads(line) for line in (root / "query/union_train/mbeir_union_up_train.jsonl").open()]
    pool = {}
    for line in (root / "cand_pool/global/mbeir_union_train_cand_pool.jsonl").open():
        record = json.loads(line)
        pool[record["did"]] = record
    by_task: dict[int, list[dict]] = {}
    for q in queries:
        if any(d in pool for d in q["pos_cand_list"]):
            by_task.setdefault(q["task_id"], []).append(q)
    chosen: list[dict] = []
    while len(chosen) < num_queries and any(by_task.values()):
        for task in sorted(by_task):
            if by_task[task] and len(chosen) < num_queries:
                chosen.append(by_task[task].pop(0))
    keep = {d for q in chosen for d in q["pos_cand_list"] + q["neg_cand_list"] if d in pool}
    keep |= set(list(d for d in pool if d not in keep)[:extra_pool])
    slice_dir = root / "slice"  # inside the data root, so img_path values resolve against it
    slice_dir.mkdir()
    train = slice_dir / "train.jsonl"
    train.write_text("".join(json.dumps(q) + "\n" for q in chosen))
    cand = slice_dir / "pool.jsonl"
    cand.write_text("".join(json.dumps(pool[d]) + "\n" for d in pool if d in keep))
    instructions = root / "instructions/query_instructions.tsv"
    pairs = slice_dir / "pairs.csv"
    with (root / TEXTPAIRS_RELPATH).open() as src, pairs.open("w", newline="") as dst:
        rows = list(csv.reader(src))
        short = [r for r in rows[1:] if len(r[0]) < 60 and len(r[1]) < 90][:num_pairs]
        csv.writer(dst, lineterminator="\n").writerows([rows[0], *short])
    return {"root": str(root), "train_data": str(train), "cand_pool": str(cand),
            "instructions": str(instructions), "pairs": str(pairs)}


def overrides(data: dict[str, str], runs: Path, stage: str, **extra) -> dict:
    values = {"output_dir": str(runs / "{name}"), "train_data": data["train_data"], "cand_pool": data["cand_pool"],
              "instructions": data["instructions"], "lora_dropout": 0.0, "max_train_examples": None}
    if stage == "stage1":
        values.update(train_data=data["pairs"], cand_pool=None, instructions=None)
    if stage == "stage0":
        values.update(instructions=None)
    values.update(extra)
    return values
