"""A user's collection: a jsonl file, one candidate a line, with ``txt`` and/or ``img_path``.

M-BEIR candidate pools are such files too (their ``did`` is the id). Errors name file:line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lamra.data.mbeir import json_lines
from lamra.items import InputError, image_file


def read_collection(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[dict]:
    """The collection's records. With ``image_root``, each ``img_path`` must name a file under it:
    checked here, before a model loads, so that a missing image is not met hours into an encode."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"collection file not found: {str(path)!r}")
    records = []
    for number, record in json_lines(path, InputError):
        if not isinstance(record, dict) or not (record.get("txt") or record.get("img_path")):
            raise InputError(f"{path}:{number}: a candidate needs 'txt' and/or 'img_path'")
        for key in ("txt", "img_path", "id", "did"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise InputError(f"{path}:{number}: {key!r} must be a string, got {type(record[key]).__name__}")
        if image_root is not None and record.get("img_path"):
            try:
                image_file(record["img_path"], image_root)
            except InputError as error:
                raise InputError(f"{path}:{number}: {error}") from None
        records.append(record)
    if not records:
        raise InputError(f"collection {str(path)!r} is empty")
    return records


def record_id(record: dict, position: int) -> str:
    return str(record.get("did") or record.get("id") or position)


def record_item(record: dict) -> dict:
    """What the model reads of a record: its text and image path."""
    return {"txt": record.get("txt") or "", "img_path": record.get("img_path")}


@dataclass
class EmbeddedCollection:
    """A collection encoded once (``role="document"``), searched many times (``LamRA.search``)."""

    records: list[dict]
    image_root: Path
    vectors: np.ndarray

    @property
    def items(self) -> list[dict]:
        return [record_item(record) for record in self.records]

    @property
    def dims(self) -> int:
        return int(self.vectors.shape[1])

    def search(self, model, queries, **options):
        return model.search(queries, corpus=self.items, corpus_embeddings=self.vectors, image_root=self.image_root,
                            **options)


def embed_collection(model, records: list[dict], image_root: str | os.PathLike,
                     show_progress: bool = True) -> EmbeddedCollection:
    vectors = model.encode([record_item(r) for r in records], image_root=image_root, show_progress=show_progress,
                           role="document")
    return EmbeddedCollection(records, Path(image_root), vectors)


@dataclass
class IndexedCollection:
    """A pool ``lamra index`` encoded, searched from its saved index without encoding it again
    (``lamra serve --index``). The same interface as ``EmbeddedCollection``: records in the index's
    order, and hits whose ``id`` is a record's position."""

    records: list[dict]
    image_root: Path
    index: Any  # a lamra.index.VectorIndex
    position: dict[str, int] = field(init=False)
    by_id: dict[str, dict] = field(init=False)

    def __post_init__(self):
        self.position = {str(record["did"]): n for n, record in enumerate(self.records)}
        self.by_id = {did: self.records[n] for did, n in self.position.items()}

    @property
    def dims(self) -> int:
        return self.index.dims

    def search(self, model, queries, **options):
        results = model.search(queries, index=self.index, index_items=self.by_id, image_root=self.image_root,
                               **options)
        return [[replace(hit, id=self.position[hit.id]) for hit in hits] for hits in results]


def open_indexed_collection(directory: str | os.PathLike, model_name: str,
                            image_root: str | os.PathLike | None = None) -> IndexedCollection:
    """The index at ``directory`` with its pool's records (``lamra.index_pool.load_pool_index`` checks both)."""
    from lamra.index_pool import load_pool_index

    index, items, root = load_pool_index(directory, model_name, image_root)
    return IndexedCollection([items[did] for did in index.ids], root, index)
