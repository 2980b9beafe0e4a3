"""M-BEIR records as the item dicts that encoders and rerankers read: ``{"txt", "img_path",
"modality", "qid"|"did"}``, text normalised with ``format_mbeir_text`` as UniIR and LamRA do, and
``img_path`` relative to the data root."""

from __future__ import annotations

from typing import Any

from lamra.data.mbeir import MBEIRCandidate, MBEIRQuery
from lamra.prompts import format_mbeir_text


def query_item(query: MBEIRQuery, instruction: str | None = None) -> dict[str, Any]:
    """The query an encoder sees (``encode`` adds the instruction: ``f"{instruction} {txt}"``).

    The official text is ``format_mbeir_text(f"{instruction} {query_txt}")``: the query's own first
    letter is not capitalised, only a final full stop added. ``txt`` is chosen so that the encoder's
    join gives exactly that string.
    """
    txt = format_mbeir_text(query.query_txt) or None
    if instruction and query.query_txt and query.query_txt.strip():
        full, prefix = format_mbeir_text(f"{instruction} {query.query_txt}"), f"{instruction} "
        if full.startswith(prefix):
            txt = full[len(prefix):]
    return {"qid": query.qid, "txt": txt, "img_path": query.query_img_path or None,
            "modality": query.query_modality}


def candidate_item(candidate: MBEIRCandidate) -> dict[str, Any]:
    return {"did": candidate.did, "txt": format_mbeir_text(candidate.txt) or None,
            "img_path": candidate.img_path or None, "modality": candidate.modality}


def rerank_query_item(query: MBEIRQuery, instruction: str | None) -> dict[str, Any]:
    """The query a reranker sees: the instruction joined to its text, as the official rerank data does."""
    item = query_item(query)
    joined = f"{instruction} {query.query_txt or ''}" if instruction else query.query_txt or ""
    item["txt"] = format_mbeir_text(joined) or None
    item["instruction"] = instruction
    return item
