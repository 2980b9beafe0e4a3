"""``lamra index``: an M-BEIR candidate pool file encoded into a saved, resumable ``VectorIndex``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lamra.data.mbeir import cand_pool_dict, read_jsonl
from lamra.data.mbeir_items import candidate_item
from lamra.index import IndexFileError, StaleIndexError, VectorIndex, load_or_build_index, similarity_of
from lamra.items import InputError

if TYPE_CHECKING:
    from lamra.evaluate.queries import Encoder


def pool_image_root(pool_path: str | Path, image_root: str | Path | None = None) -> Path:
    """Where a pool's img_path values are relative to: ``image_root``, else the M-BEIR data root
    (two levels above cand_pool/<local|global>/)."""
    return Path(image_root) if image_root is not None else Path(pool_path).resolve().parents[2]


def index_pool(encoder: Encoder | Callable[[], Encoder], pool_path: str | Path, directory: str | Path, *,
               model_name: str, image_root: str | Path | None = None, batch_size: int = 32,
               index_type: str = "flat", show_progress: bool = True) -> VectorIndex:
    """``lamra index``: encode an M-BEIR candidate pool file into a saved, resumable index.

    An up-to-date index at ``directory`` (same model, same pool file) is reused as it is. ``encoder``
    may be a function that loads it: it is called after the pool file has been read and checked,
    so a bad line is reported without waiting for a model.
    """
    pool_path = Path(pool_path).resolve()  # kept in the manifest: `lamra search --index` reads it from anywhere
    candidates = cand_pool_dict(read_jsonl(pool_path, "candidate"))
    if not hasattr(encoder, "encode"):
        encoder = encoder()
    ids = list(candidates)
    items = [candidate_item(candidates[did]) for did in ids]
    root = pool_image_root(pool_path, image_root)

    def encode(batch):
        return encoder.encode(batch, batch_size=batch_size, show_progress=False, image_root=root, role="document")

    return load_or_build_index(encode, items, ids, directory, model_name=model_name, pool_path=pool_path,
                               batch_size=batch_size, index_type=index_type, show_progress=show_progress,
                               similarity=similarity_of(encoder))


def load_pool_index(directory: str | Path, model_name: str,
                    image_root: str | Path | None = None) -> tuple[VectorIndex, dict[str, dict], Path]:
    """An index ``lamra index`` wrote, for searching without encoding its pool again: the index, its
    items by id and their image root, read from the pool file it was built from. A model or pool file
    other than the index's, a pool file no longer there, or a damaged index is refused as an
    ``InputError`` naming it."""
    try:
        index = VectorIndex.load(directory, model_name=model_name)
    except (FileNotFoundError, IndexFileError, StaleIndexError) as error:
        raise InputError(f"index {str(directory)!r}: {error}") from None
    pool_path = index.manifest.get("pool_path")
    if not pool_path or not Path(pool_path).is_file():
        raise InputError(f"index {str(directory)!r}: the pool file it was built from ({pool_path!r}) is not there")
    try:
        index.check_fresh(pool_path=pool_path)
    except StaleIndexError as error:
        raise InputError(f"index {str(directory)!r}: {error}") from None
    candidates = cand_pool_dict(read_jsonl(pool_path, "candidate"))
    return index, {did: candidate_item(c) for did, c in candidates.items()}, pool_image_root(pool_path, image_root)
