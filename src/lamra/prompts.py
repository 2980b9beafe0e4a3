"""Every prompt string LamRA uses, in one place.

The strings marked "official" are interface data: the released checkpoints (code-kunkun/LamRA-Ret,
code-kunkun/LamRA-Rank) were trained on them, so they must match the official repository byte for
byte -- including the runs of spaces that a backslash line continuation left inside two of them, and
the typo "responed". Everything else here is our own.

Messages use the Qwen2-VL chat shape that both backbones understand:
``[{"role": "user", "content": [{"type": "text", "text": ...}, {"type": "image", "image": PIL}]}, ...]``
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from lamra.items import Segment

EMB_TOKEN = "<emb>"

# --- official: LamRA-Ret (dataset/datasets_mbeir.py) -------------------------------------------
SUMMARIZE_IMAGE_AND_SENTENCE = "\nSummarize above image and sentence in one word: "
SUMMARIZE_SENTENCE = "\nSummarize above sentence in one word: "
SUMMARIZE_IMAGE = "\nSummarize above image in one word: "
EMB_ANSWER = EMB_TOKEN + "."

# --- official: LamRA-Rank (dataset/datasets_mbeir_rerank.py) -----------------------------------
POINTWISE_INSTRUCTION = (
    "I will provide you with a query and a candidate. Please evaluate whether the candidate"
    + " " * 24
    + "meets the requirements of the query. If it does, respond with 'Yes'; if it doesn't, "
    "responed with 'No'."
)
LISTWISE_INSTRUCTION = (
    "I will provide you with a query followed by multiple candidates in the format: (1) cand1 (2) "
    "cand2, etc. Each candidate is independent of the others."
    + " " * 25
    + "Evaluate each candidate against the query, and respond with the number corresponding to the "
    "candidate that best meets the requirements of the query."
)
QUERY_LABEL = "Query:"
CANDIDATE_LABEL = "Candidate:"
CANDIDATES_LABEL = "Candidates:"
YES, NO = "Yes", "No"
LISTWISE_ANSWER_PREFIX = "Ans: ("

# The official code cuts query and candidate text to this many tokens (retrieval; rerank uses 256).
MAX_TEXT_TOKENS = 480
MAX_RERANK_TEXT_TOKENS = 256



def format_mbeir_text(text: str | None) -> str:
    """M-BEIR/UniIR text normalisation: strip, drop CRs and outer quotes, capitalise, end with a stop."""
    text = (text or "").replace("\r", "").strip().strip('"')
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def _content(segments: list[Segment]) -> list[dict[str, Any]]:
    return [
        {"type": "image", "image": s} if isinstance(s, Image.Image) else {"type": "text", "text": s}
        for s in segments
    ]


def summarize_suffix(has_image: bool, has_text: bool) -> str:
    if has_image and has_text:
        return SUMMARIZE_IMAGE_AND_SENTENCE
    if has_image:
        return SUMMARIZE_IMAGE
    return SUMMARIZE_SENTENCE


def embedding_messages(segments: list[Segment]) -> list[dict[str, Any]]:
    """The LamRA-Ret conversation for one item: its segments, the summarise suffix, then ``<emb>.``.

    The official code puts the image first and then ``"{text}\\nSummarize ..."``; for interleaved items
    the segments keep their order and the suffix is appended to the last text segment (or added after
    the last image).
    """
    has_image = any(isinstance(s, Image.Image) for s in segments)
    texts = [s for s in segments if isinstance(s, str)]
    suffix = summarize_suffix(has_image, bool(texts))
    segments = list(segments)
    if segments and isinstance(segments[-1], str):
        segments[-1] = segments[-1] + suffix
    else:
        segments.append(suffix)
    return [
        {"role": "user", "content": _content(segments)},
        {"role": "assistant", "content": [{"type": "text", "text": EMB_ANSWER}]},
    ]


def pointwise_messages(
    query: list[Segment], candidate: list[Segment], answer: str | None = None
) -> list[dict[str, Any]]:
    """LamRA-Rank pointwise prompt; ``answer`` is "Yes"/"No" for training, None for scoring."""
    content = [{"type": "text", "text": POINTWISE_INSTRUCTION}]
    content += _content([QUERY_LABEL, *query]) + _content([CANDIDATE_LABEL, *candidate])
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def listwise_messages(
    query: list[Segment], candidates: list[list[Segment]], answer: int | None = None
) -> list[dict[str, Any]]:
    """LamRA-Rank listwise prompt; candidates numbered ``(1) ..``; ``answer`` is 1-based."""
    content = [{"type": "text", "text": LISTWISE_INSTRUCTION}]
    content += _content([QUERY_LABEL, *query])
    cand_segments: list[Segment] = [CANDIDATES_LABEL]
    for number, candidate in enumerate(candidates, start=1):
        cand_segments += [f"({number}) ", *candidate]
    content += _content(cand_segments)
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": f"{LISTWISE_ANSWER_PREFIX}{answer})"}]}
        )
    return messages
