"""lamra.index: search with string ids, atomic save/load, stale detection, resumable encoding."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from lamra.index import (
    IndexFileError,
    StaleIndexError,
    VectorIndex,
    build_index,
    live_version,
    load_or_build_index,
)


def random_unit(n: int, dims: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class CountingEncoder:
    """Deterministic 'embeddings' of integers; can be told to die after some calls (a killed encode)."""

    def __init__(self, dims: int = 8, fail_after_calls: int | None = None):
        self.dims = dims
        self.fail_after_calls = fail_after_calls
        self.calls = 0
        self.items_seen: list[int] = []

    def __call__(self, batch):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.items_seen.extend(batch)
        return np.stack([random_unit(1, self.dims, seed=item)[0] * 3.0 for item in batch])


def test_search_returns_ids_and_cosine_scores_best_first():
    vectors = random_unit(50, 16)
    index = VectorIndex.from_vectors(vectors, [f"9:{i}" for i in range(50)], model_name="m")
    scores, ids = index.search(vectors[[3, 7]], k=5)
    assert ids[0][0] == "9:3" and ids[1][0] == "9:7"
    assert scores.shape == (2, 5) and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    expected = np.argsort(-(vectors @ vectors[3]))[:5]
    assert ids[0] == [f"9:{i}" for i in expected]


def test_vectors_are_normalised_and_k_is_cut_to_the_index_size():
    index = VectorIndex.from_vectors(np.array([[3.0, 4.0], [0.0, 2.0]]), ["a", "b"])
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0)
    scores, ids = index.search(np.array([[0.0, 1.0]]), k=10)
    assert ids == [["b", "a"]] and np.allclose(scores, [[1.0, 0.8]])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="duplicate candidate id 'a'"):
        VectorIndex.from_vectors(random_unit(2, 4), ["a", "a"])
    with pytest.raises(ValueError, match="row 1 is a zero vector"):
        VectorIndex.from_vectors(np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "b"])
    index = VectorIndex.from_vectors(random_unit(3, 4), ["a", "b", "c"])
    with pytest.raises(ValueError, match="4 dims"):
        index.search(random_unit(1, 5), k=1)


def test_save_load_round_trip_without_the_model(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"did": "1:1"}\n')
    vectors = random_unit(20, 8)
    ids = [f"1:{i}" for i in range(20)]
    index = VectorIndex.from_vectors(vectors, ids, model_name="tiny", pool_path=pool)
    index.save(tmp_path / "idx")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")], "temp dirs left behind"
    loaded = VectorIndex.load(tmp_path / "idx", pool_path=pool, model_name="tiny")
    manifest = json.loads((live_version(tmp_path / "idx") / "manifest.json").read_text())
    assert manifest["dims"] == 8 and manifest["count"] == 20 and manifest["model"] == "tiny"
    assert manifest["pool_fingerprint"].startswith("sha256:")
    assert loaded.ids == ids
    assert loaded.search(vectors[:3], 4)[1] == index.search(vectors[:3], 4)[1]
    # saving again replaces the directory in one rename
    VectorIndex.from_vectors(vectors[:5], ids[:5], model_name="tiny", pool_path=pool).save(tmp_path / "idx")
    assert len(VectorIndex.load(tmp_path / "idx")) == 5


def test_stale_index_is_detected(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"did": "1:1"}\n')
    VectorIndex.from_vectors(random_unit(2, 4), ["a", "b"], model_name="m1", pool_path=pool).save(tmp_path / "i")
    with pytest.raises(StaleIndexError, match="model 'm1', not 'm2'"):
        VectorIndex.load(tmp_path / "i", model_name="m2")
    pool.write_text('{"did": "1:2"}\n')
    with pytest.raises(StaleIndexError, match="has changed since the index was built"):
        VectorIndex.load(tmp_path / "i", pool_path=pool)
    with pytest.raises(FileNotFoundError, match="no index at"):
        VectorIndex.load(tmp_path / "missing")
    (live_version(tmp_path / "i") / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(IndexFileError, match="unknown index format"):
        VectorIndex.load(tmp_path / "i")


@pytest.mark.parametrize("index_type,factory,search", [
    ("ivf8", "IVF8,Flat", {"nprobe": 8}),
    ("ivf", "IVF10,Flat", {"nprobe": 8}),  # 4 sqrt(400) = 80 lists, cut to one per 39 vectors
    ("hnsw", "HNSW32,Flat", {"efSearch": 128}),
    ("hnsw16", "HNSW16,Flat", {"efSearch": 128}),
    ("ivfpq", "IVF10,PQ2", {"nprobe": 8}),
    ("ivf8pqfs", "IVF8,PQ4x4fs,RFlat", {"nprobe": 8, "k_factor_rf": 32}),
    ("hnsw-pca", "PCA8,HNSW32,RFlat", {"efSearch": 128, "k_factor_rf": 8}),  # 64 dims would not reduce 16
    ("hnsw16-pca12", "PCA12,HNSW16,RFlat", {"efSearch": 128, "k_factor_rf": 8}),
    ("IVF4,Flat", "IVF4,Flat", {}),  # a FAISS factory string, as it is
])
def test_index_types_find_exact_matches_and_load_as_saved(tmp_path, index_type, factory, search):
    vectors = random_unit(400, 16, seed=1)
    index = VectorIndex.from_vectors(vectors, [str(i) for i in range(400)], index_type=index_type)
    assert (index.manifest["index_type"], index.manifest["factory"], index.manifest["search"]) == (index_type, factory, search)
    assert not index.exact
    _, ids = index.search(vectors[:10], k=3)
    found = sum(hits[0] == str(i) for i, hits in enumerate(ids))
    assert found >= (7 if "pq" in index_type else 10)  # PQ codes are lossy: most, not all
    index.save(tmp_path / "saved")
    loaded = VectorIndex.load(tmp_path / "saved")
    assert loaded.search(vectors[:10], 3)[1] == ids and loaded.manifest["search"] == search


def test_hnsw_on_principal_components_builds_a_denser_graph():
    import faiss

    from lamra.index_types import PCA_EF_CONSTRUCTION

    index = VectorIndex.from_vectors(random_unit(300, 16, seed=5), [str(i) for i in range(300)], index_type="hnsw-pca")
    refine = faiss.downcast_index(index.faiss_index)
    hnsw = faiss.downcast_index(faiss.downcast_index(refine.base_index).index)
    assert hnsw.hnsw.efConstruction == PCA_EF_CONSTRUCTION and refine.k_factor == 8


def test_search_parameters_are_kept_and_can_be_changed():
    vectors = random_unit(2000, 16, seed=2)
    ids = [str(i) for i in range(2000)]
    narrow = VectorIndex.from_vectors(vectors, ids, index_type="ivf32", search={"nprobe": 1})
    exact = VectorIndex.from_vectors(vectors, ids)
    queries = random_unit(50, 16, seed=3)
    truth = exact.search(queries, 10)[1]

    def recall(index):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(index.search(queries, 10)[1], truth)])

    low = recall(narrow)
    narrow.set_search(nprobe=32)  # every list: exact again
    assert low < 0.9 and recall(narrow) == 1.0 and narrow.manifest["search"] == {"nprobe": 32}
    with pytest.raises(ValueError, match="efSearch"):
        narrow.set_search(efSearch=64)


@pytest.mark.parametrize("bad", ["ivf0", "ivf5000", "nonsense", "hnswx", "hnsw-pca16", "hnsw-pca0"])
def test_unknown_or_impossible_index_types_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=bad):
        VectorIndex.from_vectors(random_unit(100, 16, seed=4), [str(i) for i in range(100)], index_type=bad)


def test_an_index_written_before_index_types_had_names_still_loads(tmp_path):
    vectors = random_unit(400, 16, seed=1)
    VectorIndex.from_vectors(vectors, [str(i) for i in range(400)], index_type="ivf8", search={"nprobe": 3}).save(tmp_path / "old")
    manifest_path = live_version(tmp_path / "old") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("factory", "search"):
        del manifest[key]
    manifest.update(index_type="ivf", nlist=8, nprobe=3)
    manifest_path.write_text(json.dumps(manifest))
    loaded = VectorIndex.load(tmp_path / "old")
    assert not loaded.exact and faiss.extract_index_ivf(loaded.faiss_index).nprobe == 3


def test_killed_encode_resumes_where_it_stopped(tmp_path):
    candidates = list(range(100))
    ids = [f"5:{i}" for i in candidates]
    target = tmp_path / "pool_index"

    dying = CountingEncoder(fail_after_calls=5)  # 5 batches of 10 = two chunks of 20 done, a third begun
    with pytest.raises(KeyboardInterrupt):
        build_index(dying, candidates, ids, target, model_name="m", batch_size=10, chunk_size=20,
                    show_progress=False)
    assert not target.exists() and (tmp_path / "pool_index.partial" / "progress.json").exists()
    assert json.loads((tmp_path / "pool_index.partial" / "progress.json").read_text())["done"] == 40

    resumed = CountingEncoder()
    index = build_index(resumed, candidates, ids, target, model_name="m", batch_size=10, chunk_size=20,
                        show_progress=False)
    assert resumed.items_seen == list(range(40, 100))  # nothing before the marker is encoded again
    assert not (tmp_path / "pool_index.partial").exists()

    fresh = build_index(CountingEncoder(), candidates, ids, tmp_path / "fresh", model_name="m",
                        batch_size=10, show_progress=False)
    assert np.array_equal(np.asarray(index.vectors), np.asarray(fresh.vectors))


def test_partial_build_of_another_pool_is_not_resumed(tmp_path):
    target = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        build_index(CountingEncoder(fail_after_calls=2), list(range(30)), [str(i) for i in range(30)], target,
                    model_name="m", batch_size=5, chunk_size=5, show_progress=False)
    again = CountingEncoder()
    build_index(again, list(range(30)), [str(i) for i in range(30)], target, model_name="other-model",
                batch_size=5, show_progress=False)
    assert again.items_seen == list(range(30))


def test_load_or_build_reuses_a_fresh_index(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("x\n")
    first = CountingEncoder()
    load_or_build_index(first, [1, 2, 3], ["a", "b", "c"], tmp_path / "i", model_name="m", pool_path=pool,
                        show_progress=False)
    second = CountingEncoder()
    load_or_build_index(second, [1, 2, 3], ["a", "b", "c"], tmp_path / "i", model_name="m", pool_path=pool,
                        show_progress=False)
    assert first.calls == 1 and second.calls == 0
    pool.write_text("y\n")  # the pool changed: rebuilt
    load_or_build_index(second, [1, 2, 3], ["a", "b", "c"], tmp_path / "i", model_name="m", pool_path=pool,
                        show_progress=False)
    assert second.calls == 1


# --- integrity: a file that does not belong is named, never searched --------------------------------


def _saved(tmp_path, name, n, dims=8, seed=0):
    index = VectorIndex.from_vectors(random_unit(n, dims, seed), [f"{name}:{i}" for i in range(n)], model_name="m")
    return index.save(tmp_path / name)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def _copy_from(other):
    def corrupt(version, tmp_path):
        source = live_version(_saved(tmp_path, *other)) / "index.faiss"
        (version / "index.faiss").write_bytes(source.read_bytes())
    return corrupt


CORRUPTIONS = {
    # case: (how the live version is damaged, the error it must give)
    "faiss of a smaller index": (_copy_from(("small", 10)), r"index\.faiss.* holds 10 vectors of 8 dims"),
    "faiss of another width": (_copy_from(("narrow", 20, 4)), r"index\.faiss.* holds 20 vectors of 4 dims"),
    "faiss of other vectors": (_copy_from(("other", 20, 8, 7)), r"index\.faiss.* does not hold the embeddings"),
    "truncated faiss": (lambda v, t: _truncate(v / "index.faiss"), r"cannot read .*index\.faiss"),
    "truncated manifest": (lambda v, t: _truncate(v / "manifest.json"), r"cannot read .*manifest\.json"),
    "truncated ids": (lambda v, t: _truncate(v / "ids.json"), r"cannot read .*ids\.json"),
    "other ids": (lambda v, t: (v / "ids.json").write_text(json.dumps([f"x:{i}" for i in range(20)])),
                  r"ids\.json.* does not match its manifest"),
    "truncated embeddings": (lambda v, t: _truncate(v / "embeddings.npy"), r"embeddings\.npy"),
    "missing ids": (lambda v, t: (v / "ids.json").unlink(), r"ids\.json.* is missing"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_damaged_or_mixed_index_file_is_named_and_rebuilt(tmp_path, case):
    damage, message = CORRUPTIONS[case]
    directory = _saved(tmp_path, "main", 20)
    damage(live_version(directory), tmp_path)
    with pytest.raises(IndexFileError, match=message):
        VectorIndex.load(directory)
    encoder = CountingEncoder()
    rebuilt = load_or_build_index(encoder, list(range(20)), [f"main:{i}" for i in range(20)], directory,
                                  model_name="m", show_progress=False)
    assert encoder.calls > 0 and len(VectorIndex.load(directory)) == len(rebuilt) == 20


class KillAt:
    """Raise at the n-th file operation (os.replace, shutil.rmtree, np.save, faiss.write_index) and at
    every one after it, as a kill would stop them all."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def wrap(self, function):
        def wrapped(*args, **kwargs):
            self.calls += 1
            if self.calls >= self.n:
                raise KeyboardInterrupt(f"killed at step {self.calls}")
            return function(*args, **kwargs)
        return wrapped


def test_a_kill_between_any_two_steps_of_a_replace_leaves_one_whole_index(tmp_path, monkeypatch):
    import os
    import shutil

    import faiss

    old_ids, new_ids = [f"old:{i}" for i in range(6)], [f"new:{i}" for i in range(9)]
    old, new = random_unit(6, 8, 1), random_unit(9, 8, 2)
    step, seen = 1, set()
    while True:
        directory = tmp_path / f"kill-{step}"
        VectorIndex.from_vectors(old, old_ids, model_name="m").save(directory)
        killer = KillAt(step)
        with monkeypatch.context() as patch:
            for module, name in ((os, "replace"), (shutil, "rmtree"), (np, "save"), (faiss, "write_index")):
                patch.setattr(module, name, killer.wrap(getattr(module, name)))
            try:
                VectorIndex.from_vectors(new, new_ids, model_name="m").save(directory)
                finished = True
            except KeyboardInterrupt:
                finished = False
        loaded = VectorIndex.load(directory)  # the next open: cleans up, and finds one whole index
        seen.add(tuple(loaded.ids))
        assert loaded.ids in (old_ids, new_ids), step
        assert loaded.search(new[:1] if loaded.ids == new_ids else old[:1], 1)[1][0][0] == loaded.ids[0]
        left = sorted(p.name for p in directory.iterdir())
        assert left == [".lock", "CURRENT", live_version(directory).name], (step, left)
        if finished:
            break
        step += 1
    assert step > 5 and seen == {tuple(old_ids), tuple(new_ids)}  # every step was tried, both outcomes seen


@pytest.mark.parametrize("index_type", ["flat", "ivf16"])
def test_a_loaded_index_stays_on_disk(tmp_path, index_type):
    import psutil  # a dependency of accelerate and peft

    vectors = random_unit(100_000, 256, seed=5)  # 100 MB of float32
    VectorIndex.from_vectors(vectors, [str(i) for i in range(len(vectors))], index_type=index_type,
                             assume_normalised=True).save(tmp_path / "big")
    del vectors
    process = psutil.Process()

    def private_bytes():  # resident and not backed by a file: what a pool larger than RAM cannot afford
        memory = process.memory_info()
        return memory.rss - memory.shared

    before = private_bytes()
    index = VectorIndex.load(tmp_path / "big")  # its load check searches, so file pages are read in
    grown = private_bytes() - before
    assert grown < 40e6, f"loading took {grown / 1e6:.0f} MB of private memory"  # the ids, not 100 MB of vectors
    queries = np.asarray(index.vectors[:5])
    assert [hits[0] for hits in index.search(queries, 3)[1]] == [str(i) for i in range(5)]
    in_memory = VectorIndex.load(tmp_path / "big", mmap=False)
    assert in_memory.search(queries, 3)[1] == index.search(queries, 3)[1]


def test_sharded_index_returns_what_one_index_over_everything_returns(tmp_path):
    from lamra.index_shards import ShardedIndex

    vectors = random_unit(900, 32, seed=6)
    ids = [f"7:{i}" for i in range(900)]
    whole = VectorIndex.from_vectors(vectors, ids)
    for number, (start, end) in enumerate([(0, 250), (250, 700), (700, 900)]):
        kind = "hnsw" if number == 1 else "flat"  # shards may be of different types
        VectorIndex.from_vectors(vectors[start:end], ids[start:end], index_type=kind).save(tmp_path / f"s{number}")
    sharded = ShardedIndex.load([tmp_path / f"s{n}" for n in range(3)])
    queries = random_unit(20, 32, seed=7)
    expected_scores, expected_ids = whole.search(queries, 10)
    scores, found = sharded.search(queries, 10)
    assert found == expected_ids and len(sharded) == 900
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
    assert sharded.search(queries[:1], 5000)[0].shape == (1, 900)
    with pytest.raises(ValueError, match="repeats ids"):
        ShardedIndex([sharded.shards[0], sharded.shards[0]])
