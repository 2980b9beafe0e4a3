"""M-BEIR-format training data as the stages see it: queries with their positives in the pool,
instructions drawn per query, records turned into segments (images loaded once and kept).

The image root is the data root: the folder above ``query/`` (M-BEIR's ``img_path`` values are
relative to it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lamra.data.mbeir import (
    MBEIRCandidate,
    MBEIRQuery,
    cand_pool_dict,
    dataset_id_of,
    normalize_modality,
    read_instructions,
    read_jsonl,
    src_field,
)
from lamra.items import Segment, load_image
from lamra.prompts import format_mbeir_text
from lamra.train.recipe import Recipe
from lamra.train.stages.models import StageSetupError



def data_root_of(path: str | Path) -> Path:
    """The M-BEIR root above a query or pool file (the first parent holding ``query/`` or ``cand_pool/``)."""
    path = Path(path).resolve()
    for parent in path.parents:
        if (parent / "query").is_dir() or (parent / "cand_pool").is_dir():
            return parent
    return path.parents[2] if len(path.parents) > 2 else path.parent


def _require(recipe: Recipe, *keys: str) -> None:
    for key in keys:
        value = getattr(recipe, key)
        if not value:
            raise StageSetupError(f"recipe {recipe.name!r} ({recipe.stage}) needs `{key}`")
        if not Path(value).is_file():
            raise StageSetupError(f"recipe {recipe.name!r}: {key} {value!r} not found (build the data first?)")


@dataclass
class MBEIRTrainData:
    queries: list[MBEIRQuery]
    pool: dict[str, MBEIRCandidate]
    instructions: dict[tuple[str, str, str], list[str]] | None
    image_root: Path
    seed: int

    @classmethod
    def from_recipe(cls, recipe: Recipe, need_instructions: bool = True) -> MBEIRTrainData:
        _require(recipe, "train_data", "cand_pool", *(("instructions",) if need_instructions else ()))
        pool = cand_pool_dict(read_jsonl(recipe.cand_pool, "candidate"))
        fractions = {dataset_id_of(name): share for name, share in (recipe.dataset_fractions or {}).items()}
        queries = []
        for query in read_jsonl(recipe.train_data, "query"):
            share = fractions.get(query.dataset_id, 1.0)
            if share < 1.0 and random.Random(f"{recipe.seed}:{query.qid}:fraction").random() >= share:
                continue
            if any(did in pool for did in query.pos_cand_list):  # a query without a positive cannot train
                queries.append(query)
            if recipe.max_train_examples and len(queries) >= recipe.max_train_examples:
                break
        if not queries:
            raise StageSetupError(f"{recipe.train_data}: no query has a positive in {recipe.cand_pool}")
        instructions = read_instructions(recipe.instructions) if recipe.instructions else None
        return cls(queries, pool, instructions, data_root_of(recipe.train_data), recipe.seed)

    def __post_init__(self) -> None:
        self._images: dict[str, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.queries)

    # --- records -> segments ---------------------------------------------------------------------
    def image_paths(self) -> list[str]:
        """Every image a training step can show: query images and pool images, sorted."""
        paths = {q.query_img_path for q in self.queries} | {c.img_path for c in self.pool.values()}
        return sorted(p for p in paths if p)

    def image(self, img_path: str) -> Image.Image:
        if img_path not in self._images:
            self._images[img_path] = load_image(img_path, self.image_root)
        return self._images[img_path]

    def positives(self, query: MBEIRQuery) -> list[str]:
        return [did for did in query.pos_cand_list if did in self.pool]

    def instruction(self, query: MBEIRQuery, cand_modality: str, rng: random.Random) -> str | None:
        if self.instructions is None:
            return None
        key = (query.dataset_id, normalize_modality(query.query_modality), normalize_modality(cand_modality))
        prompts = self.instructions.get(key)
        if not prompts:
            raise StageSetupError(f"no instruction for dataset {key[0]}, {key[1]} -> {key[2]}")
        return rng.choice(prompts)

    def query_segments(self, query: MBEIRQuery, instruction: str | None) -> list[Segment]:
        """Image first, then ``format_mbeir_text(f"{instruction} {query_txt}")`` (official)."""
        text = query.query_txt or ""
        text = format_mbeir_text(f"{instruction} {text}" if instruction else text)
        segments: list[Segment] = []
        if query.query_img_path:
            segments.append(self.image(query.query_img_path))
        if text:
            segments.append(text)
        return segments

    def cand_segments(self, did: str) -> list[Segment]:
        cand = self.pool[did]
        segments: list[Segment] = []
        if cand.img_path:
            segments.append(self.image(cand.img_path))
        text = format_mbeir_text(cand.txt)
        if text:
            segments.append(text)
        return segments

    def task_groups(self) -> list[list[int]]:
        """Query indices grouped by task: (dataset id, query modality), in first-seen order."""
        groups: dict[tuple[str, str], list[int]] = {}
        for index, query in enumerate(self.queries):
            groups.setdefault((query.dataset_id, normalize_modality(query.query_modality)), []).append(index)
        return list(groups.values())

    def families(self, key: str, max_size: int | None = None) -> list[list[int]]:
        """Query indices of one task that share ``query_src_content[key]`` (PocketBEIR's "concept":
        an emoji with its skin-tone and gender variants, and the emoji mapped to the same synset).

        Two queries with the same positive (an emoji's label and its Unicode name) would be each
        other's false negatives in a batch, so a family holds one query per positive: the k-th
        query of every positive forms the k-th family of the concept. A family larger than
        ``max_size`` (a family emoji with every combination of skin tones) is cut into pieces, so
        that no one concept fills a batch. Queries without the field are in no family."""
        by_value: dict[tuple, dict[str, list[int]]] = {}
        for index, query in enumerate(self.queries):
            value = src_field(query.query_src_content, key)
            if value is not None:
                task = (query.dataset_id, normalize_modality(query.query_modality), value)
                by_value.setdefault(task, {}).setdefault(self.positives(query)[0], []).append(index)
        families = []
        for by_positive in by_value.values():
            depth = max(len(indices) for indices in by_positive.values())
            for k in range(depth):
                family = [indices[k] for indices in by_positive.values() if k < len(indices)]
                step = max_size or len(family)
                families += [family[start : start + step] for start in range(0, len(family), step)]
        return families

    def rng_for(self, query: MBEIRQuery, epoch: int, purpose: str) -> random.Random:
        """A generator seeded by (seed, epoch, qid, purpose): draws do not depend on batch order."""
        return random.Random(f"{self.seed}:{epoch}:{query.qid}:{purpose}")
