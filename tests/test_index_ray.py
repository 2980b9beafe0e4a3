"""`lamra index --ray`: Ray Data encoding gives the one-process index; a killed run resumes."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import ray

from eval_helpers import HashingEncoder, RecordingHashingEncoder, build_toy_mbeir

from lamra.index_pool import index_pool
from lamra.index import VectorIndex
from lamra.index_ray import ray_index_pool

TESTS = str(Path(__file__).parent)
RUNTIME = {"runtime_env": {"env_vars": {"PYTHONPATH": TESTS}}}  # workers import eval_helpers


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return build_toy_mbeir(tmp_path_factory.mktemp("toy_mbeir"))


def pool_of(root):
    return root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"


def demo_pool(path: Path) -> Path:
    """The demo collection as an M-BEIR pool: its images, and its labels as text candidates."""
    from lamra.data.mbeir import write_jsonl
    from lamra.demo import load_collection

    records = []
    for number, item in enumerate(load_collection()):
        records.append({"did": f"10:{number}", "txt": None, "img_path": item["img_path"], "modality": "image"})
        records.append({"did": f"11:{number}", "txt": item["label"], "img_path": None, "modality": "text"})
    write_jsonl(path, records)
    return path


def test_two_workers_give_the_one_process_index_with_the_real_model(tmp_path):
    from lamra.cli import load_model
    from lamra.demo import DEMO_DIR

    pool = demo_pool(tmp_path / "pool.jsonl")
    load = functools.partial(load_model, None, "fp32")
    expected = index_pool(load(), pool, tmp_path / "one", model_name="compact", image_root=DEMO_DIR,
                          show_progress=False)
    built = ray_index_pool(load, pool, tmp_path / "ray", model_name="compact", image_root=DEMO_DIR,
                           workers=2, rows_per_task=8, show_progress=False)
    assert built.ids == expected.ids and built.manifest["pool_fingerprint"] == expected.manifest["pool_fingerprint"]
    np.testing.assert_allclose(np.asarray(built.vectors), np.asarray(expected.vectors), atol=1e-5)
    assert VectorIndex.load(tmp_path / "ray").ids == expected.ids  # saved in the format lamra index writes
    assert not (tmp_path / "ray.ray").exists()  # shards merged and removed


def test_a_killed_run_resumes_and_encodes_only_what_is_missing(toy_root, tmp_path):
    log = tmp_path / "encoded.txt"
    dying = functools.partial(RecordingHashingEncoder, str(log), fail_after=3)
    with pytest.raises(Exception, match="worker killed"):
        ray_index_pool(dying, pool_of(toy_root), tmp_path / "index", model_name="hash", image_root=toy_root,
                       workers=1, rows_per_task=4, ray_init=RUNTIME, show_progress=False)
    shards = list((tmp_path / "index.ray").glob("shard-*.npz"))
    assert shards and not (tmp_path / "index").exists()
    kept = [did for path in shards for did in np.load(path)["did"].tolist()]
    log.unlink()
    built = ray_index_pool(functools.partial(RecordingHashingEncoder, str(log)), pool_of(toy_root),
                           tmp_path / "index", model_name="hash", image_root=toy_root, workers=2,
                           rows_per_task=4, ray_init=RUNTIME, show_progress=False)
    assert len(log.read_text().splitlines()) == len(built) - len(kept) > 0  # only what the shards lacked
    expected = index_pool(HashingEncoder(), pool_of(toy_root), tmp_path / "one", model_name="hash",
                          show_progress=False)
    assert built.ids == expected.ids
    np.testing.assert_allclose(np.asarray(built.vectors), np.asarray(expected.vectors), atol=1e-6)


def test_ray_is_shut_down_after_a_run_it_started():
    assert not ray.is_initialized()
