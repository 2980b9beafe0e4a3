"""M-BEIR files, exactly as UniIR ships them: read them streaming, write them atomically.

Layout under a data root (``mbeir_data_dir`` in UniIR)::

    query/{train,val,test}/mbeir_{name}_task{N}_{split}.jsonl
    query/union_train/mbeir_union_up_train.jsonl
    cand_pool/local/mbeir_{name}_task{N}_cand_pool.jsonl      (MSCOCO: ..._task{N}_{split}_cand_pool)
    cand_pool/global/mbeir_union_{train,val,test}_cand_pool.jsonl
    qrels/{split}/mbeir_{name}_task{N}_{split}_qrels.txt       lines "qid 0 did 1 task_id"
    instructions/query_instructions.tsv                         header, then qmod, cmod, dataset,
                                                                dataset id, instruction paraphrases
    mbeir_images/... (any folder under the root; image paths are relative to the root)

A query line: ``qid`` ("{dataset_id}:{n}"), ``query_txt``, ``query_img_path``, ``query_modality``
("text" | "image" | "image,text"), ``query_src_content``, ``pos_cand_list``, ``neg_cand_list``
(lists of dids), ``task_id``. A candidate line: ``txt``, ``img_path``, ``modality``, ``did``,
``src_content``. Unknown keys are kept (``extra``) and written back after the known ones.

Everything streams (the real global pool has 5.6M lines); a bad line raises ``MBEIRFormatError``
naming ``file:line``; every writer writes a temporary file and renames it, so a failed write leaves
nothing behind.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lamra.atomic_io import atomic_text_writer, atomic_write_text
from lamra.items import InputError, load_image, resolve_under
from lamra.prompts import format_mbeir_text

# --- tasks, modalities, datasets ---------------------------------------------------------------

TEXT, IMAGE, IMAGE_TEXT = "text", "image", "image,text"
MODALITIES = (TEXT, IMAGE, IMAGE_TEXT)

#: M-BEIR task id -> (query modality, candidate modality). Task 5 (image -> image,text) is unused.
TASKS: dict[int, tuple[str, str]] = {
    0: (TEXT, IMAGE),
    1: (TEXT, TEXT),
    2: (TEXT, IMAGE_TEXT),
    3: (IMAGE, TEXT),
    4: (IMAGE, IMAGE),
    6: (IMAGE_TEXT, TEXT),
    7: (IMAGE_TEXT, IMAGE),
    8: (IMAGE_TEXT, IMAGE_TEXT),
}
_SHORT = {TEXT: "t", IMAGE: "i", IMAGE_TEXT: "(i,t)"}
#: task id -> short name as in the paper's tables: "q_t -> c_i" etc.
TASK_NAMES: dict[int, str] = {t: f"{_SHORT[q]} -> {_SHORT[c]}" for t, (q, c) in TASKS.items()}

#: M-BEIR's own datasets (UniIR's DATASET_IDS).
MBEIR_DATASET_IDS: dict[str, int] = {
    "VisualNews": 0,
    "Fashion200K": 1,
    "WebQA": 2,
    "EDIS": 3,
    "NIGHTS": 4,
    "OVEN": 5,
    "INFOSEEK": 6,
    "FashionIQ": 7,
    "CIRR": 8,
    "MSCOCO": 9,
}

#: PocketBEIR: one dataset per task, ids 10 and up: name -> (dataset id, task id).
POCKETBEIR_DATASETS: dict[str, tuple[int, int]] = {
    "EmojiName": (10, 0),  # t -> i: an everyday name -> the emoji image
    "WordNetPassage": (11, 1),  # t -> t: a masked example sentence -> the concept's passage
    "EmojiDesc": (12, 2),  # t -> (i,t): a definition or keywords -> (image, name)
    "EmojiCaption": (13, 3),  # i -> t: an emoji image -> its name
    "EmojiVendor": (14, 4),  # i -> i: a Google emoji -> the same emoji drawn by Twitter
    "EmojiWiki": (15, 6),  # (i,t) -> t: image + question -> the WordNet passage (OVEN-like)
    "EmojiVariant": (16, 7),  # (i,t) -> i: image + "with dark skin tone" -> the variant (CIRR-like)
    "EmojiQA": (17, 8),  # (i,t) -> (i,t): image + question -> (image, passage)
}

DATASET_IDS: dict[str, int] = {**MBEIR_DATASET_IDS, **{n: d for n, (d, _) in POCKETBEIR_DATASETS.items()}}
DATASET_NAMES: dict[int, str] = {i: n for n, i in DATASET_IDS.items()}

SPLITS = ("train", "val", "test")


def normalize_modality(modality: str) -> str:
    """``"text,image"`` and ``"image,text"`` (any spacing) are one modality; M-BEIR writes the latter."""
    parts = sorted(p.strip() for p in str(modality).split(","))
    if parts == ["image", "text"]:
        return IMAGE_TEXT
    if len(parts) == 1 and parts[0] in (TEXT, IMAGE):
        return parts[0]
    raise ValueError(f"unknown modality {modality!r} (expected one of {', '.join(MODALITIES)})")


def task_id_for(query_modality: str, cand_modality: str) -> int:
    """The M-BEIR task id of a (query modality, candidate modality) pair."""
    key = (normalize_modality(query_modality), normalize_modality(cand_modality))
    for task, modalities in TASKS.items():
        if modalities == key:
            return task
    raise ValueError(f"no M-BEIR task for {key[0]} -> {key[1]}")


def dataset_id_of(id_or_name: str | int) -> str:
    """``"9:123"`` -> ``"9"``; ``9`` -> ``"9"``; ``"MSCOCO"`` / ``"mscoco"`` -> ``"9"``."""
    if isinstance(id_or_name, int):
        return str(id_or_name)
    text = str(id_or_name)
    head = text.split(":", 1)[0]
    if head.isdigit():
        return head
    for name, dataset_id in DATASET_IDS.items():
        if name.lower() == text.lower():
            return str(dataset_id)
    raise ValueError(f"unknown dataset {id_or_name!r}")


# --- records -----------------------------------------------------------------------------------


@dataclass(slots=True)
class MBEIRQuery:
    qid: str
    query_txt: str | None
    query_img_path: str | None
    query_modality: str
    query_src_content: Any = None
    pos_cand_list: list[str] = field(default_factory=list)
    neg_cand_list: list[str] = field(default_factory=list)
    task_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_id(self) -> str:
        return self.qid.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        record = {
            "qid": self.qid,
            "query_txt": self.query_txt,
            "query_img_path": self.query_img_path,
            "query_modality": self.query_modality,
            "query_src_content": self.query_src_content,
            "pos_cand_list": list(self.pos_cand_list),
            "neg_cand_list": list(self.neg_cand_list),
        }
        if self.task_id is not None:
            record["task_id"] = self.task_id
        record.update(self.extra)
        return record


@dataclass(slots=True)
class MBEIRCandidate:
    did: str
    txt: str | None
    img_path: str | None
    modality: str
    src_content: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_id(self) -> str:
        return self.did.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        record = {
            "txt": self.txt,
            "img_path": self.img_path,
            "modality": self.modality,
            "did": self.did,
            "src_content": self.src_content,
        }
        record.update(self.extra)
        return record


Record = MBEIRQuery | MBEIRCandidate
Kind = Literal["query", "candidate"]


class MBEIRFormatError(InputError):
    """A malformed M-BEIR file; the message starts with ``file:line`` (an InputError: the CLI shows it
    as one line)."""


def json_lines(path: Path, error: type[Exception] = None) -> Iterator[tuple[int, Any]]:
    """``(line number from 1, parsed JSON)`` of each non-blank line; a line that is not UTF-8 or not
    JSON raises ``error`` (default MBEIRFormatError) naming ``file:line``."""
    error = error or MBEIRFormatError
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise error(f"{path}:{line_no}: not UTF-8 (byte {raw[bad.start]:#04x} at column {bad.start + 1})") from None
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as bad:
                raise error(f"{path}:{line_no}: invalid JSON ({bad.msg})") from None


_ID = re.compile(r"^\d+:\d+$")


def src_field(src_content: Any, key: str) -> str | int | None:
    """One field of a ``query_src_content`` / ``src_content`` (a JSON object or its text), else None."""
    if isinstance(src_content, str):
        try:
            src_content = json.loads(src_content)
        except ValueError:
            return None
    value = src_content.get(key) if isinstance(src_content, dict) else None
    return value if isinstance(value, (str, int)) else None


_QUERY_KEYS = ("qid", "query_txt", "query_img_path", "query_modality", "query_src_content",
               "pos_cand_list", "neg_cand_list", "task_id")
_CAND_KEYS = ("txt", "img_path", "modality", "did", "src_content")


def _check_text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null, got {type(value).__name__}")
    return value


def _check_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{name} must look like 'dataset_id:n', got {value!r}")
    return value


def _check_ids(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of dids, got {type(value).__name__}")
    return [_check_id(v, name) for v in value]


def _check_content(modality: str, txt: str | None, img: str | None, who: str) -> None:
    if IMAGE in modality and not img:
        raise ValueError(f"{who} modality is {modality!r} but it has no image path")
    if TEXT in modality and not (txt and txt.strip()):
        raise ValueError(f"{who} modality is {modality!r} but it has no text")


def query_from_dict(record: dict[str, Any]) -> MBEIRQuery:
    """Validate one parsed query line (raises ValueError with a short reason)."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "qid" not in record or "query_modality" not in record:
        raise ValueError("a query needs 'qid' and 'query_modality'")
    modality = normalize_modality(record["query_modality"])
    txt = _check_text(record.get("query_txt"), "query_txt")
    img = _check_text(record.get("query_img_path"), "query_img_path")
    _check_content(modality, txt, img, "query")
    task_id = record.get("task_id")
    if task_id is not None and (isinstance(task_id, bool) or int(task_id) not in TASKS):
        raise ValueError(f"unknown task_id {task_id!r}")
    return MBEIRQuery(
        qid=_check_id(record["qid"], "qid"),
        query_txt=txt,
        query_img_path=img,
        query_modality=modality,
        query_src_content=record.get("query_src_content"),
        pos_cand_list=_check_ids(record.get("pos_cand_list"), "pos_cand_list"),
        neg_cand_list=_check_ids(record.get("neg_cand_list"), "neg_cand_list"),
        task_id=None if task_id is None else int(task_id),
        extra={k: v for k, v in record.items() if k not in _QUERY_KEYS},
    )


def candidate_from_dict(record: dict[str, Any]) -> MBEIRCandidate:
    """Validate one parsed candidate line (raises ValueError with a short reason)."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "did" not in record or "modality" not in record:
        raise ValueError("a candidate needs 'did' and 'modality'")
    modality = normalize_modality(record["modality"])
    txt = _check_text(record.get("txt"), "txt")
    img = _check_text(record.get("img_path"), "img_path")
    _check_content(modality, txt, img, "candidate")
    return MBEIRCandidate(
        did=_check_id(record["did"], "did"),
        txt=txt,
        img_path=img,
        modality=modality,
        src_content=record.get("src_content"),
        extra={k: v for k, v in record.items() if k not in _CAND_KEYS},
    )


def read_jsonl(path: str | os.PathLike, kind: Kind) -> Iterator[Record]:
    """Stream the queries or candidates of one M-BEIR jsonl file (blank lines are skipped)."""
    if kind not in ("query", "candidate"):
        raise ValueError(f"kind must be 'query' or 'candidate', got {kind!r}")
    parse = query_from_dict if kind == "query" else candidate_from_dict
    path = Path(path)
    if not path.is_file():
        raise MBEIRFormatError(f"{path}: no such file")
    for line_no, value in json_lines(path):
        try:
            yield parse(value)
        except (ValueError, TypeError, AttributeError) as error:
            record_id = value.get("qid" if kind == "query" else "did") if isinstance(value, dict) else None
            named = f" {record_id!r}" if isinstance(record_id, str) else ""
            raise MBEIRFormatError(f"{path}:{line_no}: bad {kind}{named}: {error}") from None


def _as_dict(record: Record | dict[str, Any]) -> dict[str, Any]:
    return record if isinstance(record, dict) else record.to_dict()


def write_jsonl(path: str | os.PathLike, records: Iterable[Record | dict[str, Any]]) -> int:
    """Write records (dataclasses or dicts) one JSON object a line, atomically; returns the count."""
    count = 0
    with atomic_text_writer(path) as handle:
        for record in records:
            handle.write(json.dumps(_as_dict(record), ensure_ascii=False) + "\n")
            count += 1
    return count


# --- qrels ---------------------------------------------------------------------------------------


class Qrels(dict):
    """``{qid: {did, ...}}`` (relevance > 0 only), with ``task_ids: {qid: task_id}`` beside it."""

    def __init__(self, *args, task_ids: dict[str, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.task_ids: dict[str, int] = dict(task_ids or {})


def _id_key(identifier: str) -> tuple[int, int]:
    head, _, tail = identifier.partition(":")
    return (int(head), int(tail)) if head.isdigit() and tail.isdigit() else (1 << 62, 0)


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read a TREC-style M-BEIR qrels file: ``qid 0 did relevance task_id`` a line."""
    path = Path(path)
    if not path.is_file():
        raise MBEIRFormatError(f"{path}: no such file")
    qrels = Qrels()
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise MBEIRFormatError(f"{path}:{line_no}: expected 'qid 0 did relevance task_id', got {line.strip()!r}")
            qid, _, did, relevance, task_id = parts
            try:
                _check_id(qid, "qid")
                _check_id(did, "did")
                relevance_value, task_value = int(relevance), int(task_id)
            except ValueError as error:
                raise MBEIRFormatError(f"{path}:{line_no}: {error}") from None
            if relevance_value > 0:
                qrels.setdefault(qid, set()).add(did)
                qrels.task_ids.setdefault(qid, task_value)
    return qrels


def write_qrels(path: str | os.PathLike, qrels: dict[str, Iterable[str]], task_ids: dict[str, int] | int) -> int:
    """Write qrels (``qid 0 did 1 task_id``), qids in the given order, dids sorted; returns lines."""
    lines = []
    for qid, dids in qrels.items():
        task = task_ids if isinstance(task_ids, int) else task_ids[qid]
        for did in sorted(set(dids), key=_id_key):
            lines.append(f"{qid} 0 {did} 1 {task}\n")
    atomic_write_text(path, "".join(lines))
    return len(lines)


# --- instructions --------------------------------------------------------------------------------

InstructionKey = tuple[str, str, str]  # (dataset id, query modality, candidate modality)
INSTRUCTIONS_HEADER = ["query_modality", "cand_modality", "dataset", "dataset_id"]


@dataclass(slots=True)
class InstructionRow:
    query_modality: str
    cand_modality: str
    dataset: str
    dataset_id: str
    instructions: list[str]


def read_instruction_rows(path: str | os.PathLike) -> list[InstructionRow]:
    path = Path(path)
    if not path.is_file():
        raise MBEIRFormatError(f"{path}: no such file")
    rows = []
    with path.open("r", encoding="utf-8") as handle:
        next(handle, None)  # header
        for line_no, line in enumerate(handle, 2):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 5:
                raise MBEIRFormatError(
                    f"{path}:{line_no}: expected query modality, candidate modality, dataset, dataset id "
                    f"and at least one instruction, tab-separated")
            try:
                qmod, cmod = normalize_modality(parts[0]), normalize_modality(parts[1])
            except ValueError as error:
                raise MBEIRFormatError(f"{path}:{line_no}: {error}") from None
            prompts = [p.strip() for p in parts[4:] if p.strip()]
            if not prompts:
                raise MBEIRFormatError(f"{path}:{line_no}: no instruction text")
            rows.append(InstructionRow(qmod, cmod, parts[2].strip(), parts[3].strip(), prompts))
    return rows


def read_instructions(path: str | os.PathLike) -> dict[InstructionKey, list[str]]:
    """``{(dataset_id, query_modality, cand_modality): [instruction, ...]}`` from the TSV."""
    return {(r.dataset_id, r.query_modality, r.cand_modality): r.instructions for r in read_instruction_rows(path)}


def write_instructions(path: str | os.PathLike, rows: Iterable[InstructionRow]) -> int:
    rows = list(rows)
    width = max((len(r.instructions) for r in rows), default=1)
    header = INSTRUCTIONS_HEADER + [f"prompt_{i + 1}" for i in range(width)]
    lines = ["\t".join(header)]
    for r in rows:
        for text in [r.dataset, r.dataset_id, *r.instructions]:
            if "\t" in text or "\n" in text:
                raise ValueError(f"instruction fields cannot hold tabs or newlines: {text!r}")
        lines.append("\t".join([r.query_modality, r.cand_modality, r.dataset, r.dataset_id, *r.instructions]))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(rows)


# --- the layout ----------------------------------------------------------------------------------


def query_relpath(name: str, task: int, split: str) -> str:
    return f"query/{split}/mbeir_{name.lower()}_task{task}_{split}.jsonl"


def local_pool_relpath(name: str, task: int, split: str | None = None) -> str:
    middle = f"{name.lower()}_task{task}" + (f"_{split}" if split else "")
    return f"cand_pool/local/mbeir_{middle}_cand_pool.jsonl"


def global_pool_relpath(split: str) -> str:
    return f"cand_pool/global/mbeir_union_{split}_cand_pool.jsonl"


def qrels_relpath(name: str, task: int, split: str) -> str:
    return f"qrels/{split}/mbeir_{name.lower()}_task{task}_{split}_qrels.txt"


UNION_TRAIN_RELPATH = "query/union_train/mbeir_union_up_train.jsonl"
INSTRUCTIONS_RELPATH = "instructions/query_instructions.tsv"
_QUERY_FILE = re.compile(r"^mbeir_(?P<name>.+)_task(?P<task>\d+)_(?P<split>[a-z_]+)\.jsonl$")


def cand_pool_dict(candidates: Iterable[MBEIRCandidate]) -> dict[str, MBEIRCandidate]:
    """``{did: candidate}``; a repeated did is an error."""
    pool: dict[str, MBEIRCandidate] = {}
    for candidate in candidates:
        if candidate.did in pool:
            raise MBEIRFormatError(f"duplicate did {candidate.did} in candidate pool")
        pool[candidate.did] = candidate
    return pool


class MBEIRDataset:
    """An M-BEIR-format data root: the real M-BEIR or PocketBEIR, read the same way.

    >>> data = MBEIRDataset("~/.cache/lamra/pocketbeir")
    >>> data.tasks("test")                      # [("emojiname", 0), ...]
    >>> for query in data.queries("test", "emojiname", 0): ...
    >>> pool = data.cand_pool_dict("emojiname", 0)
    """

    def __init__(self, root: str | os.PathLike, instructions_path: str | os.PathLike | None = None):
        """``instructions_path``: another instructions TSV in place of the root's own (e.g. held-out
        paraphrases, to measure how much a model depends on the exact wording it was trained with)."""
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise InputError(f"M-BEIR data root not found: {str(self.root)!r}")
        self.instructions_path = Path(instructions_path) if instructions_path else self.root / INSTRUCTIONS_RELPATH
        self._instructions: dict[InstructionKey, list[str]] | None = None

    def __repr__(self) -> str:
        return f"MBEIRDataset({str(self.root)!r})"

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    # listing
    def tasks(self, split: str) -> list[tuple[str, int]]:
        """The (dataset file name, task id) pairs that have a query file in ``split``, sorted."""
        folder = self.root / "query" / split
        found = []
        for file in sorted(folder.glob("mbeir_*_task*_*.jsonl")) if folder.is_dir() else []:
            match = _QUERY_FILE.match(file.name)
            if match and match["split"] == split:
                found.append((match["name"], int(match["task"])))
        return sorted(found, key=lambda nt: (nt[1], nt[0]))

    def datasets(self, split: str) -> list[str]:
        return sorted({name for name, _ in self.tasks(split)})

    def _select(self, split: str, name: str | None, task: int | None) -> list[tuple[str, int]]:
        if name is not None and task is not None:
            return [(name.lower(), int(task))]
        chosen = [(n, t) for n, t in self.tasks(split)
                  if (name is None or n == name.lower()) and (task is None or t == int(task))]
        if not chosen:
            raise InputError(f"no query file in {str(self.root / 'query' / split)!r} for "
                             f"dataset={name!r} task={task!r}")
        return chosen

    # records
    def queries(self, split: str, name: str | None = None, task: int | None = None) -> Iterator[MBEIRQuery]:
        """Stream the queries of one dataset/task (or all files matching either) in ``split``."""
        if split == "union_train":
            yield from read_jsonl(self.root / UNION_TRAIN_RELPATH, "query")
            return
        for n, t in self._select(split, name, task):
            yield from read_jsonl(self.root / query_relpath(n, t, split), "query")

    def local_pool_path(self, name: str, task: int, split: str | None = None) -> Path:
        """The dataset's local pool; a split-specific one (MSCOCO's ``task0_test``) wins if present."""
        if split:
            specific = self.root / local_pool_relpath(name, task, split)
            if specific.is_file():
                return specific
        return self.root / local_pool_relpath(name, task)

    def local_pool(self, name: str, task: int, split: str | None = None) -> Iterator[MBEIRCandidate]:
        yield from read_jsonl(self.local_pool_path(name, task, split), "candidate")

    def global_pool(self, split: str) -> Iterator[MBEIRCandidate]:
        yield from read_jsonl(self.root / global_pool_relpath(split), "candidate")

    def cand_pool_dict(self, name: str | None = None, task: int | None = None,
                       split: str = "test") -> dict[str, MBEIRCandidate]:
        """``{did: candidate}`` of a local pool (name and task given) or of the split's global pool."""
        if name is None:
            return cand_pool_dict(self.global_pool(split))
        if task is None:
            raise ValueError("a local pool needs both the dataset name and the task id")
        return cand_pool_dict(self.local_pool(name, task, split))

    def qrels(self, split: str, name: str, task: int) -> Qrels:
        return read_qrels(self.root / qrels_relpath(name, task, split))

    # instructions
    @property
    def instructions(self) -> dict[InstructionKey, list[str]]:
        if self._instructions is None:
            self._instructions = read_instructions(self.instructions_path)
        return self._instructions

    def instruction_for(self, qid_or_dataset_id: str | int, query_modality: str, cand_modality: str,
                        rng: random.Random | None = None) -> str:
        """An instruction for (dataset, query modality, candidate modality), normalised as UniIR does.

        With ``rng`` a paraphrase is drawn at random (training); without, the first one (evaluation).
        """
        key = (dataset_id_of(qid_or_dataset_id), normalize_modality(query_modality), normalize_modality(cand_modality))
        prompts = self.instructions.get(key)
        if not prompts:
            raise InputError(f"no instruction for dataset {key[0]}, {key[1]} -> {key[2]} in "
                             f"{str(self.instructions_path)!r}")
        return format_mbeir_text(rng.choice(prompts) if rng is not None else prompts[0])

    # images
    def resolve_image(self, img_path: str | os.PathLike) -> Path:
        """The absolute path of an image path from a record; a path escaping the root is refused."""
        return resolve_under(self.root, img_path)

    def load_image(self, img_path: str | os.PathLike):
        """Open a record's image as RGB (transparent pixels composited onto white)."""
        return load_image(self.resolve_image(img_path), self.root.resolve())
