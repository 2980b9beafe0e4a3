"""Mining for LamRA-Rank: the trained LamRA-Ret retrieves the top-K of each training query.

Output (read back with ``read_mined``): JSON lines, one per training query, in the order of the training file::

    {"qid": "10:81", "gt_docs": ["10:283"], "top_docs": ["10:283", "10:12", ...], "scores": [0.83, 0.61, ...]}

``gt_docs`` are the query's positives (``pos_cand_list``); ``top_docs`` the K best candidates of
the training pool by cosine similarity, best first (positives included: the rank stage filters
them), ``scores`` their similarities. Each query is encoded with its instruction (a paraphrase drawn
by (seed, qid) for its first positive's modality, as in evaluation).

Resumable: lines go to ``{out}.partial`` as they are done (flushed per chunk); a rerun skips the qids
already there (a torn last line is dropped) and reuses the pool embeddings saved in
``{out}.pool.pt``; when every query is done the file is renamed to ``out`` (atomic) and the pool
file removed.

``local``: each query's top-K comes from its local pool only -- the candidates of its positives'
datasets (the M-BEIR dataset id before the did's colon), as a local-pool evaluation will rerank
them. In the global pool the top of an image query's list is mostly other images, whatever the
task asks for, and a reranker trained on those negatives learns the modality, not the match.

``channels``: the retriever's score channels (``lamra.appearance``, ``lamra.colour``), when its
package has them: candidates are then ranked as an evaluation ranks them (LMM cosine plus the
channels' terms), so the reranker trains on the lists it will be given.

``pool_index``: a ``lamra index`` directory of the same pool built with the same retriever (the
evaluation's cached global pool, say) is reused instead of encoding the pool again. Its ids must be
the pool's, and a few candidates are encoded afresh to check that its vectors are this retriever's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lamra.atomic_io import atomic_write
from lamra.backbones.base import Backbone
from lamra.data.mbeir import dataset_id_of
from lamra.index import VectorIndex
from lamra.prompts import format_mbeir_text
from lamra.retriever import Retriever
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.stages.models import StageSetupError

QUERY_CHUNK = 64
INDEX_CHECK_ITEMS = 8  # candidates re-encoded to check that a reused index is this retriever's
INDEX_CHECK_COSINE = 0.99  # bf16 autocast in another batch moves a vector by far less than this


def _done_qids(partial: Path) -> set[str]:
    if not partial.is_file():
        return set()
    lines = partial.read_text().splitlines(keepends=True)
    good = []
    for line in lines:
        try:
            json.loads(line)
            if line.endswith("\n"):
                good.append(line)
        except json.JSONDecodeError:
            break
    if len(good) != len(lines):  # a killed write left a torn line: cut it off
        partial.write_text("".join(good))
    return {json.loads(line)["qid"] for line in good}


def read_mined(path: str | os.PathLike) -> dict[str, dict]:
    path = Path(path)
    if not path.is_file():
        raise StageSetupError(f"mined file {str(path)!r} not found: run `lamra train mine` first")
    mined = {}
    with path.open() as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                mined[record["qid"]] = record
            except (json.JSONDecodeError, KeyError) as error:
                raise StageSetupError(f"{path}:{line_no}: not a mined record ({error})") from None
    return mined


def of_datasets(mined: dict[str, dict], datasets: list[str]) -> dict[str, dict]:
    """The mined records whose query belongs to one of ``datasets`` (names or ids)."""
    wanted = {dataset_id_of(dataset) for dataset in datasets}
    return {qid: record for qid, record in mined.items() if dataset_id_of(qid) in wanted}


def _pool_key(dids: list[str]) -> str:
    return hashlib.sha256("\n".join(dids).encode()).hexdigest()


def mine(
    backbone: Backbone,
    data: MBEIRTrainData,
    out: str | os.PathLike,
    top_k: int = 100,
    batch_size: int = 16,
    precision: str = "bf16",
    show_progress: bool = True,
    max_queries: int | None = None,
    pool_size: int | None = None,
    pool_index: str | os.PathLike | None = None,
    local: bool = False,
    channels: Mapping[str, Any] | None = None,
) -> Path:
    """Write the mined file ``out`` (see the module doc); returns its path.

    ``pool_size`` mines in a smaller pool: the positives of the mined queries plus a sample (seeded)
    of the other candidates up to ``pool_size`` in all -- for budgets that cannot encode the pool."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    pool_file = out.with_name(out.name + ".pool.pt")
    retriever = Retriever(backbone, precision=precision, **(channels or {}))
    queries = data.queries[:max_queries] if max_queries else data.queries
    dids = mining_pool(data, queries, pool_size)
    key = _pool_key(dids)

    pool_vectors = None
    if pool_index is not None:
        pool_vectors = _vectors_from_index(pool_index, dids, data, retriever, batch_size)
    elif pool_file.is_file():
        saved = torch.load(pool_file, weights_only=True)
        if saved.get("key") == key:
            pool_vectors = saved["vectors"]
    if pool_vectors is None:
        items = [_cand_item(data, did) for did in dids]
        pool_vectors = retriever.encode(items, batch_size=batch_size, show_progress=show_progress,
                                        image_root=data.image_root, convert_to_numpy=False, role="document")
        atomic_write(pool_file, lambda temp: torch.save({"key": key, "vectors": pool_vectors}, temp))

    datasets = sorted({did.split(":", 1)[0] for did in dids})  # once: the pool's column of each candidate
    column = torch.tensor([datasets.index(did.split(":", 1)[0]) for did in dids])
    done = _done_qids(partial)
    todo = [q for q in queries if q.qid not in done]
    k = min(top_k, len(dids))
    bar = tqdm(total=len(queries), initial=len(queries) - len(todo), desc="mine", unit="query",
               disable=not show_progress)
    with partial.open("a") as handle:
        for start in range(0, len(todo), QUERY_CHUNK):
            chunk = todo[start : start + QUERY_CHUNK]
            items, instructions = [], []
            for query in chunk:
                instruction = _instruction(data, query)
                items.append({"txt": query.query_txt or "", "img_path": query.query_img_path})
                instructions.append(instruction)
            vectors = retriever.encode(_with_texts(items, instructions), batch_size=batch_size,
                                       image_root=data.image_root, convert_to_numpy=False)
            similarity = vectors @ pool_vectors.T
            if local:
                similarity = similarity.masked_fill(~_local_mask(chunk, datasets, column), float("-inf"))
            scores, top = similarity.topk(k, dim=1)
            for query, row_scores, row_top in zip(chunk, scores.tolist(), top.tolist(), strict=True):
                kept = [(i, s) for i, s in zip(row_top, row_scores) if s != float("-inf")]
                record = {"qid": query.qid, "gt_docs": list(query.pos_cand_list),
                          "top_docs": [dids[i] for i, _ in kept], "scores": [round(s, 6) for _, s in kept]}
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(chunk))
    bar.close()
    os.replace(partial, out)
    pool_file.unlink(missing_ok=True)
    return out


def _vectors_from_index(directory, dids: list[str], data: MBEIRTrainData, retriever: Retriever,
                        batch_size: int) -> torch.Tensor:
    """The pool's vectors, in ``dids`` order, from a saved index checked against ``retriever``."""
    index = VectorIndex.load(directory)
    row_of = {did: row for row, did in enumerate(index.ids)}
    missing = [did for did in dids if did not in row_of]
    if missing:
        raise ValueError(f"index {str(directory)!r} lacks {len(missing)} of the pool's candidates "
                         f"(first: {missing[0]!r}); build it from the same pool file")
    if index.dims != retriever.dims:
        raise ValueError(f"index {str(directory)!r} (model {index.model_name!r}) holds {index.dims}-d vectors, this "
                         f"retriever writes {retriever.dims}-d ones: it was not built with this retriever"
                         + (" (with its score channels?)" if index.dims > retriever.dims else ""))
    vectors = torch.from_numpy(index.vectors[[row_of[did] for did in dids]].copy())
    check = random.Random(f"{data.seed}:index-check").sample(range(len(dids)), min(INDEX_CHECK_ITEMS, len(dids)))
    fresh = retriever.encode([_cand_item(data, dids[i]) for i in check], batch_size=batch_size,
                             image_root=data.image_root, convert_to_numpy=False, role="document")
    cosines = torch.nn.functional.cosine_similarity(fresh.float(), vectors[check], dim=1)
    if cosines.min() < INDEX_CHECK_COSINE:
        raise ValueError(f"index {str(directory)!r} (model {index.model_name!r}) was not built with this "
                         f"retriever: re-encoded candidates have cosine {cosines.min():.3f} with its vectors")
    return vectors


def _local_mask(queries, datasets: list[str], column: torch.Tensor) -> torch.Tensor:
    """(queries, pool) True where the candidate (``column``: its dataset's place in ``datasets``) is
    in a dataset of the query's positives."""
    allowed = torch.zeros(len(queries), len(datasets), dtype=torch.bool)
    for row, query in enumerate(queries):
        for did in query.pos_cand_list:
            prefix = did.split(":", 1)[0]
            if prefix in datasets:
                allowed[row, datasets.index(prefix)] = True
    return allowed[:, column]


def mining_pool(data: MBEIRTrainData, queries, pool_size: int | None) -> list[str]:
    """The dids to mine in: the whole pool, or the queries' positives plus a seeded sample."""
    dids = list(data.pool)
    if not pool_size or pool_size >= len(dids):
        return dids
    positives = {did for query in queries for did in data.positives(query)}
    others = sorted(set(dids) - positives)
    sample = random.Random(f"{data.seed}:mining-pool").sample(others, max(0, pool_size - len(positives)))
    keep = positives | set(sample)
    return [did for did in dids if did in keep]


def _instruction(data: MBEIRTrainData, query) -> str | None:
    positives = data.positives(query)
    own = [did for did in positives if did.split(":", 1)[0] == query.dataset_id]
    modality = data.pool[(own or positives)[0]].modality
    return data.instruction(query, modality, random.Random(f"{data.seed}:{query.qid}"))


def _with_texts(items: list[dict], instructions: list[str | None]) -> list[dict]:
    """Query items whose text is the official ``format_mbeir_text(f"{instruction} {query_txt}")``."""
    result = []
    for item, instruction in zip(items, instructions, strict=True):
        text = format_mbeir_text(f"{instruction} {item['txt']}" if instruction else item["txt"])
        result.append({"txt": text, "img_path": item["img_path"]})
    return result


def _cand_item(data: MBEIRTrainData, did: str) -> dict:
    cand = data.pool[did]
    return {"txt": format_mbeir_text(cand.txt), "img_path": cand.img_path}
