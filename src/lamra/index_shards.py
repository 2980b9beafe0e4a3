"""Several saved indexes searched as one: each shard's top-k, merged by score.

A pool too large for one index (or one machine's disk) is indexed in shards, each a ``lamra index``
directory of its own (any index type); ``ShardedIndex`` searches every shard and keeps the best k
of their hits, so ``LamRA.search(index=...)`` and the evaluation take it in place of one index.
Ids must not repeat across shards: a candidate in two shards would be returned twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from lamra.index import VectorIndex


class ShardedIndex:
    def __init__(self, shards: Sequence[VectorIndex]):
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        dims = {shard.dims for shard in shards}
        if len(dims) != 1:
            raise ValueError(f"shards of different widths: {sorted(dims)} dims")
        seen: set[str] = set()
        for number, shard in enumerate(shards):
            repeated = seen.intersection(shard.ids)
            if repeated:
                raise ValueError(f"shard {number} repeats ids of an earlier shard, e.g. {sorted(repeated)[0]!r}")
            seen.update(shard.ids)
        self.shards = list(shards)
        self._shard_of: dict[str, VectorIndex] | None = None  # id -> its shard, built when vectors_of first asks

    @classmethod
    def load(cls, directories: Sequence[str | os.PathLike], **load_options) -> "ShardedIndex":
        return cls([VectorIndex.load(directory, **load_options) for directory in directories])

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    @property
    def dims(self) -> int:
        return self.shards[0].dims

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """As ``VectorIndex.vectors_of``, each id read from the shard that holds it."""
        if self._shard_of is None:
            self._shard_of = {did: shard for shard in self.shards for did in shard.ids}
        rows = np.zeros((len(ids), self.dims), np.float32)
        for row, did in enumerate(ids):
            if did not in self._shard_of:
                raise KeyError(f"id {did!r} is not in this index")
            rows[row] = self._shard_of[did].vectors_of([did])[0]
        return rows

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """As ``VectorIndex.search``: the best k over all shards, best first (equal scores: earlier
        shard first)."""
        per_shard = [shard.search(query_vectors, k) for shard in self.shards]
        queries = len(per_shard[0][1])
        k = min(k, len(self))
        scores = np.full((queries, k), -np.inf, np.float32)
        ids: list[list[str]] = []
        for row in range(queries):
            row_scores = np.concatenate([s[row, : len(found[row])] for s, found in per_shard])
            row_ids = [did for _, found in per_shard for did in found[row]]
            best = np.argsort(-row_scores, kind="stable")[:k]
            scores[row, : len(best)] = row_scores[best]
            ids.append([row_ids[i] for i in best])
        return scores, ids
