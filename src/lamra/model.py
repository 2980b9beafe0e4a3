"""``LamRA``: the one object users hold. Load, encode, search, rerank."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamra.appearance import AppearanceChannel
from lamra.backbones.base import Backbone
from lamra.backbones.openvino_engine import check_backend, use_openvino
from lamra.colour import ColourChannel
from lamra.items import InputError, check_top_k, to_segment_batch, to_segments
from lamra.query_expansion import QueryExpansion, expanded_search
from lamra.reranker import Reranker, fuse
from lamra.retriever import Retriever, Truncation

logger = logging.getLogger(__name__)

#: The light checkpoint format of the compact model: a projector and adapters over packaged parts.
LIGHT_CONFIG = "lamra.json"
SHIPPED_DIR = Path(__file__).parent / "weights" / "compact"
# "listwise-parity": the official evaluation's greedy exact-match rule (lamra.reranker), for comparisons
RERANK_MODES = ("pointwise", "listwise", "listwise-parity")


@dataclass
class Hit:
    """One search result: the candidate's id (its index in the corpus, or its did), score, item."""

    id: str | int
    score: float
    item: Any = None
    retrieval_score: float | None = None
    rerank_score: float | None = None


def _config_model_type(path: Path) -> str | None:
    config = path / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("model_type")


def load_backbone(
    name_or_path: str | os.PathLike | None,
    adapter: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    role: str = "retrieval",
) -> Backbone:
    """A backbone from a Qwen-VL checkpoint (dir or hub id), a full compact checkpoint, or the
    light compact format (``lamra.json``); None means the shipped compact model."""
    from lamra.backbones.compact import CompactBackbone
    from lamra.backbones.qwen_vl import QwenVLBackbone

    if name_or_path is None:
        if not (SHIPPED_DIR / LIGHT_CONFIG).is_file():
            raise FileNotFoundError(f"no shipped model at {SHIPPED_DIR}; pass a checkpoint path")
        name_or_path = SHIPPED_DIR
    path = Path(name_or_path)
    if (path / LIGHT_CONFIG).is_file():
        from lamra.light_checkpoint import load_light_compact

        return load_light_compact(path, role=role, device=device, dtype=dtype)
    model_type = _config_model_type(path) if path.is_dir() else None
    if model_type == "lamra_compact":
        return CompactBackbone.from_pretrained(path, adapter=adapter, dtype=dtype, device=device)
    if model_type in (None, "qwen2_vl", "qwen2_5_vl"):
        # a hub id (None here) or a local Qwen-VL directory; transformers says what is wrong otherwise
        return QwenVLBackbone.from_pretrained(str(name_or_path), adapter=adapter, dtype=dtype, device=device)
    raise ValueError(f"{str(path)!r} is a {model_type!r} checkpoint; LamRA loads Qwen2-VL, Qwen2.5-VL or compact")


class LamRA:
    """A universal retrieval assistant: ``encode`` anything, ``search`` a corpus, ``rerank`` hits.

    >>> model = LamRA.from_pretrained()
    >>> vectors = model.encode(["a grinning face", Path("cat.png"), ("a red one", image)])
    >>> hits = model.search(["smiling cat"], corpus=[...], top_k=5)
    """

    def __init__(
        self, backbone: Backbone, reranker_backbone: Backbone | Callable[[], Backbone] | None = None,
        precision: str = "auto", truncation: Truncation | None = None, appearance: AppearanceChannel | None = None,
        colour: ColourChannel | None = None,
    ):
        """``reranker_backbone``: LamRA-Rank's backbone, or a function that loads it, called the first
        time ``reranker`` is used (so encode and search alone never pay for a second model)."""
        self.backbone = backbone
        self.precision = precision
        self.retriever = Retriever(backbone, precision=precision, truncation=truncation, appearance=appearance,
                                   colour=colour)
        self._reranker: Reranker | None = None
        self._load_reranker: Callable[[], Backbone] | None = None
        if callable(reranker_backbone) and not isinstance(reranker_backbone, Backbone):
            self._load_reranker = reranker_backbone
        elif reranker_backbone is not None:
            self._reranker = Reranker(reranker_backbone, precision=precision)
        self._reranker_lock = threading.Lock()

    @property
    def similarity(self) -> str:
        """How ``encode``'s vectors are compared: "cosine", or "dot" for a model with score channels
        (``lamra.appearance``, ``lamra.colour``); ``search`` and indexes do this themselves."""
        return self.retriever.similarity

    @property
    def has_reranker(self) -> bool:
        """Whether LamRA-Rank is here or will load on first use (without loading it)."""
        return self._reranker is not None or self._load_reranker is not None

    @property
    def reranker(self) -> Reranker | None:
        """LamRA-Rank (loaded now if it was deferred), or None when the model has none."""
        with self._reranker_lock:
            if self._reranker is None and self._load_reranker is not None:
                self._reranker = Reranker(self._load_reranker(), precision=self.precision)
                self._load_reranker = None
        return self._reranker

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        adapter: str | os.PathLike | None = None,
        reranker: str | os.PathLike | None = None,
        reranker_adapter: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        precision: str = "auto",
        position_mode: str | None = None,
        channels: bool = True,
        backend: str = "torch",
    ) -> LamRA:
        """Load LamRA-Ret (and LamRA-Rank when ``reranker`` is given or the checkpoint has one; a
        checkpoint's own reranker loads the first time it is used).

        ``name_or_path``: None for the shipped compact model; a Qwen2-VL/Qwen2.5-VL directory or hub id
        (e.g. ``code-kunkun/LamRA-Ret``); or a compact checkpoint directory. ``precision``: "auto"
        uses bf16 autocast where the hardware supports it, "fp32" never does. ``position_mode``
        (Qwen-VL retrieval only): "sequential" or "mrope"; None picks what the checkpoint was trained
        with (sequential for LamRA-Ret, see ``lamra.backbones.qwen_vl.POSITION_MODES``).
        ``channels=False`` ignores a compact package's score channels (``lamra.appearance``,
        ``lamra.colour``): the LMM embedding alone, unit rows compared by cosine.
        ``backend="openvino"`` (compact model, CPU; ``pip install 'lamra[openvino]'``) runs encoding's
        vision trunk and decoder in OpenVINO, in the precision ``precision`` picks
        (``lamra.backbones.openvino_engine``); a separate LamRA-Rank stays in torch.
        """
        check_backend(backend)
        backbone = load_backbone(name_or_path, adapter=adapter, device=device, dtype=dtype)
        if backend == "openvino":
            use_openvino(backbone, precision)
        if position_mode is not None:
            if not hasattr(backbone, "position_mode"):
                raise ValueError("position_mode applies to Qwen2-VL / Qwen2.5-VL checkpoints only")
            backbone.set_position_mode(position_mode)
        light_source = SHIPPED_DIR if name_or_path is None else Path(name_or_path)
        if not (light_source / LIGHT_CONFIG).is_file():
            light_source = None
        rank_backbone, score_channels = None, {}
        if light_source is not None and channels:
            from lamra.light_checkpoint import CHANNELS, load_channel

            score_channels = {kind: load_channel(light_source, kind) for kind in CHANNELS}
        if reranker is not None or reranker_adapter is not None:
            rank_backbone = load_backbone(
                reranker or name_or_path, adapter=reranker_adapter, device=device, dtype=dtype, role="rank"
            )
        elif light_source is not None:
            from lamra.light_checkpoint import has_rank_adapter, roles_share_weights

            if roles_share_weights(light_source):  # one model for both jobs: no second copy
                rank_backbone = backbone
            elif has_rank_adapter(light_source):  # loaded on first use: encode and search alone do not need it
                rank_backbone = functools.partial(load_backbone, light_source, device=device, dtype=dtype, role="rank")
        return cls(backbone, rank_backbone, precision=precision, **score_channels)

    # --- LamRA-Ret -------------------------------------------------------------------------------
    def encode(
        self,
        items: Sequence[Any],
        instruction: str | Sequence[str | None] | None = None,
        batch_size: int = 16,
        show_progress: bool = False,
        image_root: str | os.PathLike | None = None,
        convert_to_numpy: bool = True,
        role: str = "query",
    ) -> np.ndarray:
        """Embed strings, images (PIL or ``pathlib.Path``), (text, image) pairs, M-BEIR records and
        interleaved lists; float32 rows in input order, compared by ``similarity`` (L2-normalised
        unless the model has an appearance channel). ``instruction`` (one, or one
        per item) is prefixed to each item's text, as LamRA does for queries. ``role`` "document"
        (candidates, a corpus) applies the document length limit of ``retriever.truncation``."""
        return self.retriever.encode(
            items,
            instruction=instruction,
            batch_size=batch_size,
            show_progress=show_progress,
            image_root=image_root,
            convert_to_numpy=convert_to_numpy,
            role=role,
        )

    def search(
        self,
        queries: Sequence[Any],
        corpus: Sequence[Any] | None = None,
        *,
        corpus_embeddings: np.ndarray | None = None,
        index=None,
        index_items: Mapping[str, Any] | None = None,
        image_root: str | os.PathLike | None = None,
        top_k: int = 10,
        instruction: str | None = None,
        rerank: str | None = None,
        rerank_top_k: int = 10,
        rerank_weight: float = 1.0,
        batch_size: int = 16,
        show_progress: bool = False,
        query_expansion: QueryExpansion | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each query, from an in-memory ``corpus`` or a saved ``index``
        (:class:`lamra.index.VectorIndex`, or a ``ShardedIndex``). ``corpus_embeddings``: the
        corpus already encoded (``encode(corpus, role="document")``), so a collection searched
        many times is encoded once. ``index_items``: the index's items by id (``lamra.index_pool.load_pool_index``
        gives them), so its hits carry their items and can be reranked. ``image_root``: where relative
        image paths of the corpus are.
        ``rerank`` (one of ``RERANK_MODES``) reranks the first ``rerank_top_k`` hits and sorts
        them by retrieval + ``rerank_weight`` * rerank score. Equal scores keep corpus order.
        ``query_expansion`` (``lamra.query_expansion.QueryExpansion``) searches again with each query
        moved toward its first hits (pseudo-relevance feedback)."""
        if (corpus is None) == (index is None):
            raise InputError("search needs exactly one of corpus= or index=")
        check_top_k(top_k)
        if rerank:
            check_top_k(rerank_top_k, "rerank_top_k")
        query_vectors = self.encode(queries, instruction=instruction, batch_size=batch_size, show_progress=show_progress)
        if index is None:
            corpus_vectors = corpus_embeddings
            if corpus_vectors is None:
                corpus_vectors = self.encode(corpus, batch_size=batch_size, show_progress=show_progress,
                                             image_root=image_root, role="document")
            elif len(corpus_vectors) != len(corpus):
                raise InputError(f"{len(corpus_vectors)} corpus embeddings for {len(corpus)} corpus items")
            corpus_array = np.asarray(corpus_vectors)

            def search_corpus(vectors: np.ndarray, depth: int):
                scores = vectors @ corpus_array.T
                top = np.argsort(-scores, axis=1, kind="stable")[:, : min(depth, len(corpus))]
                return np.take_along_axis(scores, top, axis=1), [list(row) for row in top]

            found_scores, found_rows = expanded_search(search_corpus, lambda rows: corpus_array[rows], query_vectors,
                                                       top_k, query_expansion)
            results = [
                [Hit(int(j), float(s), corpus[j]) for j, s in zip(row, row_scores)]
                for row, row_scores in zip(found_rows, found_scores, strict=True)
            ]
        else:
            found_scores, found_ids = expanded_search(index.search, index.vectors_of, query_vectors, top_k,
                                                      query_expansion)
            results = [
                [Hit(did, float(s), None if index_items is None else index_items.get(did))
                 for did, s in zip(ids, row, strict=False)]
                for ids, row in zip(found_ids, found_scores, strict=True)
            ]
        if rerank:
            for query, hits in zip(queries, results, strict=True):
                head = hits[:rerank_top_k]
                if head and head[0].item is None:
                    raise InputError("reranking hits from an index needs their items (index_items=)")
                # the query's images are the caller's (read like encode read them), not the corpus's
                hits[: len(head)] = self.rerank(
                    to_segments(query), [h.item for h in head], retrieval_scores=[h.score for h in head],
                    mode=rerank, weight=rerank_weight, ids=[h.id for h in head], image_root=image_root,
                )
        return results

    # --- LamRA-Rank ------------------------------------------------------------------------------
    def rerank(
        self,
        query: Any,
        candidates: Sequence[Any],
        *,
        retrieval_scores: Sequence[float] | None = None,
        mode: str = "pointwise",
        weight: float = 1.0,
        window: int = 5,
        ids: Sequence[Any] | None = None,
        image_root: str | os.PathLike | None = None,
    ) -> list[Hit]:
        """Score candidates for a query with LamRA-Rank; returns hits sorted best first. With
        ``retrieval_scores`` the score is their fusion (retrieval + weight * rerank)."""
        if self.reranker is None:
            raise RuntimeError("this model has no reranker; load one with from_pretrained(reranker=...)")
        if mode not in RERANK_MODES:
            raise InputError(f"rerank mode must be one of {', '.join(RERANK_MODES)}, got {mode!r}")
        try:
            query_segments = to_segments(query, image_root)
        except InputError as error:
            raise InputError(f"query ({query!r:.80}): {error}") from None
        cand_segments = to_segment_batch(candidates, image_root=image_root, what="candidate")
        if mode == "pointwise":
            rerank_scores = self.reranker.pointwise(query_segments, cand_segments)
        elif mode == "listwise":
            rerank_scores = self.reranker.listwise(query_segments, cand_segments, window=window)
        else:
            rerank_scores = self.reranker.listwise_parity(query_segments, cand_segments, window=window)
        base = np.zeros(len(candidates)) if retrieval_scores is None else np.asarray(retrieval_scores)
        final = fuse(base, rerank_scores, weight) if retrieval_scores is not None else rerank_scores
        ids = list(range(len(candidates))) if ids is None else list(ids)
        hits = [
            Hit(ids[i], float(final[i]), candidates[i],
                None if retrieval_scores is None else float(base[i]), float(rerank_scores[i]))
            for i in range(len(candidates))
        ]
        return sorted(hits, key=lambda h: -h.score)
