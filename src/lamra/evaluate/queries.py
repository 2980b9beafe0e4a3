"""The queries of an evaluation: which (a seeded sample or all), with which instruction, and their
vectors; and which encoders can take them (``supported_modalities``)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from lamra.data.mbeir import MBEIRCandidate, MBEIRDataset, MBEIRQuery, normalize_modality
from lamra.evaluate.tasks import EvalTask
from lamra.items import InputError


class Encoder(Protocol):
    def encode(self, items: Sequence[Any], instruction: str | None = None, batch_size: int = 32,
               show_progress: bool = False, image_root: str | Path | None = None,
               role: str = "query") -> np.ndarray: ...


class ModalityNotSupported(InputError):
    """Raised by an encoder for an item it cannot encode (a text-only model given an image)."""


def positive_modality(query: MBEIRQuery, pool: Mapping[str, MBEIRCandidate], task: EvalTask) -> str:
    """The candidate modality that keys the query's instruction: that of its first positive from its
    own dataset (UniIR's eval; OVEN/InfoSeek list positives of other datasets too), else the task's."""
    own = [did for did in query.pos_cand_list if did.split(":", 1)[0] == query.dataset_id]
    for did in own or query.pos_cand_list:
        if did in pool:
            return pool[did].modality
    return task.candidate_modality


def pick_instruction(data: MBEIRDataset, query: MBEIRQuery, candidate_modality: str, *,
                     choice: str = "random", seed: int = 0) -> str | None:
    """The query's instruction: ``choice="random"`` draws a paraphrase from a generator seeded by
    (seed, qid); ``"first"`` takes the first paraphrase of the TSV row; ``"none"`` gives none (the
    query alone, to see how much a model leans on the instruction)."""
    if choice == "none":
        return None
    if choice == "random":
        rng = random.Random(f"{seed}:{query.qid}")  # str seeds hash with sha512: stable across runs
    elif choice == "first":
        rng = None
    else:
        raise ValueError(f"instruction choice {choice!r}: expected 'random', 'first' or 'none'")
    return data.instruction_for(query.qid, query.query_modality, candidate_modality, rng=rng)


def sample_queries(queries: list[MBEIRQuery], count: int | None, seed: str) -> list[MBEIRQuery]:
    """``count`` of ``queries`` drawn with ``seed``, in their original order (all when count is None)."""
    if count is None or count >= len(queries):
        return queries
    if count < 1:
        raise ValueError(f"queries_per_task must be at least 1, got {count}")
    keep = set(random.Random(seed).sample(range(len(queries)), count))
    return [query for i, query in enumerate(queries) if i in keep]


def modalities_of(items: Iterable[Mapping[str, Any]]) -> set[str]:
    found = set()
    for item in items:
        found.update(normalize_modality(item["modality"]).split(","))
    return found


def unsupported_modalities(encoder: Any, modalities: set[str]) -> set[str]:
    supported = getattr(encoder, "supported_modalities", None)
    return set() if supported is None else modalities - set(supported)


def model_label(encoder: Any) -> str:
    return getattr(encoder, "name", None) or type(encoder).__name__


def encode_queries(encoder: Encoder, items: Sequence[dict], instructions: Sequence[str], *, batch_size: int,
                   image_root: Path, show_progress: bool) -> np.ndarray:
    """Encode queries grouped by instruction (``encode`` takes one per call); rows keep input order."""
    groups: dict[str, list[int]] = {}
    for position, instruction in enumerate(instructions):
        groups.setdefault(instruction, []).append(position)
    vectors: np.ndarray | None = None
    with tqdm(total=len(items), desc="encoding queries", unit="query", disable=not show_progress) as bar:
        for instruction, positions in groups.items():
            encoded = np.asarray(encoder.encode([items[p] for p in positions], instruction=instruction,
                                                batch_size=batch_size, show_progress=False,
                                                image_root=image_root), dtype=np.float32)
            if encoded.shape[0] != len(positions):
                raise ValueError(f"encode returned {encoded.shape[0]} vectors for {len(positions)} queries")
            if vectors is None:
                vectors = np.zeros((len(items), encoded.shape[1]), np.float32)
            vectors[positions] = encoded
            bar.update(len(positions))
    if vectors is None:
        raise ValueError("no queries to encode")
    return vectors
