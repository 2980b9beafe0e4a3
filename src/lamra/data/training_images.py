"""The images an M-BEIR training split shows: what a channel fitted on training data may look at."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def training_images(data_root: str | Path) -> list[str]:
    """Image paths (relative to the data root) of the train queries and of their positive candidates.
    Not the union pools: M-BEIR's hold every split's candidates."""
    data_root = Path(data_root)
    image_of: dict[str, str] = {}
    for pool in sorted((data_root / "cand_pool" / "local").glob("*.jsonl")):
        for record in _records(pool):
            if record.get("img_path"):
                image_of[record["did"]] = record["img_path"]
    paths: set[str] = set()
    for file in sorted((data_root / "query" / "train").glob("*.jsonl")):
        for record in _records(file):
            if record.get("query_img_path"):
                paths.add(record["query_img_path"])
            paths.update(image_of[did] for did in record.get("pos_cand_list", []) if did in image_of)
    if not paths:
        raise ValueError(f"no training images under {str(data_root)!r}: is it an M-BEIR (PocketBEIR) directory?")
    return sorted(paths)


def _records(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())
