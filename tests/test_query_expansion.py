"""Query expansion (pseudo-relevance feedback): the expanded query, a positive it recovers, and the
same hits from every place a search runs (an index, shards, an in-memory corpus, the evaluation)."""

from __future__ import annotations

import numpy as np
import pytest

from lamra import LamRA
from lamra.index import VectorIndex
from lamra.query_expansion import QueryExpansion, expanded_search

# The query's nearest item A lies between it and the positive P; a distractor D is nearer the query
# than P is, so a plain top 2 is [A, D]. Moving the query toward A brings P above D.
CORPUS = np.array([[0.9, 0.436, 0.0], [0.55, 0.835, 0.0], [0.7, 0.0, 0.714]], np.float32)  # A, P, D
CORPUS /= np.linalg.norm(CORPUS, axis=1, keepdims=True)  # as an index stores them
IDS = ["A", "P", "D"]
QUERY = np.array([[1.0, 0.0, 0.0]], np.float32)


def test_the_expanded_query_is_the_query_plus_weight_times_its_hits_mean():
    hits = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((0, 2))]
    expanded = QueryExpansion(top=2, weight=0.5).expand(np.array([[1.0, 1.0], [5.0, 5.0]]), hits)
    np.testing.assert_allclose(expanded, [[2.0, 2.5], [5.0, 5.0]])  # a query with no hits stays
    assert QueryExpansion(top=2, weight=0.5).expand(np.zeros((0, 2)), []).shape == (0, 2)


@pytest.mark.parametrize("bad", [dict(top=0), dict(top=1.5), dict(top=True), dict(weight=-1.0), dict(weight=float("nan")), dict(weight="far")])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="query expansion"):
        QueryExpansion(**bad)


def test_expansion_recovers_a_positive_that_a_plain_search_misses():
    index = VectorIndex.from_vectors(CORPUS, IDS)
    assert index.search(QUERY, 2)[1] == [["A", "D"]]
    _, found = expanded_search(index.search, index.vectors_of, QUERY, 2, QueryExpansion(top=1, weight=1.0))
    assert found == [["A", "P"]]
    plain = expanded_search(index.search, index.vectors_of, QUERY, 2, None)
    assert plain[1] == index.search(QUERY, 2)[1]  # no expansion: the plain search


def test_sharded_and_single_indexes_give_the_same_vectors_and_hits(tmp_path):
    from lamra.index_shards import ShardedIndex

    VectorIndex.from_vectors(CORPUS[:1], IDS[:1]).save(tmp_path / "s0")
    VectorIndex.from_vectors(CORPUS[1:], IDS[1:]).save(tmp_path / "s1")
    sharded, whole = ShardedIndex.load([tmp_path / "s0", tmp_path / "s1"]), VectorIndex.from_vectors(CORPUS, IDS)
    np.testing.assert_allclose(sharded.vectors_of(["D", "A"]), whole.vectors_of(["D", "A"]))
    expansion = QueryExpansion(top=1, weight=1.0)
    assert (expanded_search(sharded.search, sharded.vectors_of, QUERY, 3, expansion)[1]
            == expanded_search(whole.search, whole.vectors_of, QUERY, 3, expansion)[1])
    with pytest.raises(KeyError, match="'Z'"):
        whole.vectors_of(["Z"])


def test_model_search_expands_the_same_way_over_a_corpus_and_an_index(compact_backbone, monkeypatch):
    model = LamRA(compact_backbone, precision="fp32")
    monkeypatch.setattr(model, "encode", lambda queries, **options: QUERY.repeat(len(queries), axis=0))
    expansion = QueryExpansion(top=1, weight=1.0)
    over_corpus = model.search(["q"], corpus=["a", "p", "d"], corpus_embeddings=CORPUS, top_k=2, query_expansion=expansion)
    assert [hit.item for hit in over_corpus[0]] == ["a", "p"]
    assert [hit.item for hit in model.search(["q"], corpus=["a", "p", "d"], corpus_embeddings=CORPUS, top_k=2)[0]] == ["a", "d"]
    over_index = model.search(["q"], index=VectorIndex.from_vectors(CORPUS, IDS), top_k=2, query_expansion=expansion)
    assert [hit.id for hit in over_index[0]] == ["A", "P"]
    np.testing.assert_allclose([h.score for h in over_index[0]], [h.score for h in over_corpus[0]], atol=1e-5)
