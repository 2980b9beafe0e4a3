"""Fit LamRA-Ret's appearance channel (``lamra.appearance``) and choose its weight on the val split.

    .venv/bin/python scripts/fit_appearance.py [--model src/lamra/weights/compact] [--dims 576]

1. The PCA: the global trunk features of every training image of PocketBEIR (the train queries' images
   and their positive candidates'), nothing from val or test.
2. The weight: every val query of every task against its task's full local pool, scored with the
   channel at each weight of ``--grid`` (the model encodes each item once; the grid only rescales the
   channel's block). The weight with the best average R@5 wins; a tie goes to the smaller weight.
3. The channel is written into the package (``appearance.safetensors``, named in ``lamra.json``), and
   ``--page`` records the grid (val numbers only: test is for the results pages).

``--dry-run`` does 1 and 2 and writes nothing into the package.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from tqdm.auto import tqdm

from lamra import LamRA
from lamra.appearance import AppearanceChannel
from lamra.assets import lamra_home
from lamra.evaluate.runner import evaluate_mbeir
from lamra.evaluate.tables import DISPLAY_NAMES, markdown_table, write_markdown
from lamra.items import load_image
from lamra.light_checkpoint import set_appearance
from lamra.retriever import autocast_for

DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 3.0)


def training_images(data_root: Path) -> list[str]:
    """Image paths (relative to the data root) of the train queries and of their positive candidates.
    Not the union pools: M-BEIR's hold every split's candidates."""
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
        raise SystemExit(f"no training images under {data_root}: is it a PocketBEIR (M-BEIR) directory?")
    return sorted(paths)


def _records(path: Path):
    with path.open(encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def global_features(model: LamRA, paths: list[str], image_root: Path, batch_size: int = 64) -> np.ndarray:
    """The trunk's global (mean-pooled) feature of each image, through the model's feature cache."""
    backbone = model.backbone
    rows = []
    with autocast_for(backbone.device, model.precision, backbone.model):
        for start in tqdm(range(0, len(paths), batch_size), desc="training images", unit="batch"):
            images = [load_image(p, image_root) for p in paths[start : start + batch_size]]
            rows.append(backbone.feature_cache.get_many(backbone.hf_model, images)[:, 0].numpy())
    return np.concatenate(rows)


class WeightedChannel:
    """The model's vectors with the appearance block scaled to ``weight``; each item is encoded once
    (at weight 1) and the block rescaled, so a grid of weights costs one encoding."""

    similarity = "dot"

    def __init__(self, model: LamRA):
        self.model = model
        self.lmm_dims = model.retriever.dims - model.retriever.appearance.dims
        self.weight = 1.0
        self._memo: dict[tuple, np.ndarray] = {}

    def encode(self, items, instruction=None, role: str = "query", **options) -> np.ndarray:
        instructions = instruction if isinstance(instruction, (list, tuple)) else [instruction] * len(items)
        keys = [(json.dumps(item, sort_keys=True, default=str), text, role) for item, text in zip(items, instructions)]
        fresh = [row for row, key in enumerate(keys) if key not in self._memo]
        if fresh:
            vectors = self.model.encode([items[row] for row in fresh], instruction=[instructions[row] for row in fresh],
                                        role=role, **options)
            self._memo.update((keys[row], vector) for row, vector in zip(fresh, vectors))
        vectors = np.stack([self._memo[key] for key in keys])
        vectors[:, self.lmm_dims :] *= np.sqrt(self.weight)
        return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="src/lamra/weights/compact", help="a light compact package")
    parser.add_argument("--data", type=Path, default=lamra_home() / "pocketbeir")
    parser.add_argument("--dims", type=int, default=576, help="PCA components kept")
    parser.add_argument("--grid", default=",".join(map(str, DEFAULT_GRID)), help="weights tried on val")
    parser.add_argument("--page", default="results/appearance.md")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    grid = sorted(float(w) for w in args.grid.split(","))

    started = time.perf_counter()
    model = LamRA.from_pretrained(args.model, appearance=False)
    model.backbone.persist_features()
    paths = training_images(args.data)
    channel = AppearanceChannel.fit(global_features(model, paths, args.data), args.dims)
    model.backbone.feature_cache.flush()
    print(f"PCA of {len(paths)} training images: {channel.dims} components")

    model.retriever.appearance = channel  # weight 1; the sweep rescales
    encoder = WeightedChannel(model)
    averages, rows = {}, []
    for weight in grid:
        encoder.weight = weight
        report = evaluate_mbeir(encoder, args.data, split="val", pools=("local",), method=f"w = {weight:g}",
                                show_progress=weight == grid[0])
        recalls = {r.task.dataset: 100 * r.metrics["R@5"] for r in report.results}
        averages[weight] = float(np.mean(list(recalls.values())))
        rows.append((weight, recalls))
        print(f"w = {weight:g}: val average R@5 {averages[weight]:.1f}", flush=True)
    best = max(grid, key=lambda w: (round(averages[w], 6), -w))
    tasks = list(rows[0][1])
    table = markdown_table(["w", *(DISPLAY_NAMES.get(t, t) for t in tasks), "Avg"], [
        [f"**{w:g}**" if w == best else f"{w:g}", *(f"{recalls[t]:.1f}" for t in tasks), f"{averages[w]:.1f}"]
        for w, recalls in rows])
    page = (f"# LamRA-Ret's appearance channel: the weight chosen on val\n\n"
            f"Val split, every query, each task's full local pool; R@5 x100. w = 0 is the LMM embedding alone. "
            f"PCA of {len(paths)} training images' global trunk features, {channel.dims} components. "
            f"Chosen: w = {best:g} (best average; ties go to the smaller weight). Test numbers are on "
            f"`results/pocketbeir.md`.\n\n{table}\n")
    print(page)
    if args.dry_run:
        return
    set_appearance(args.model, channel.with_weight(best))
    command = ".venv/bin/python scripts/fit_appearance.py" + (f" --model {args.model}" if args.model != parser.get_default("model") else "")
    write_markdown(args.page, command, page)
    print(f"wrote the channel (w = {best:g}) into {args.model} and {args.page}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
