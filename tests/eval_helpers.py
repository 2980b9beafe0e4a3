"""A hand-made M-BEIR-format directory and a hashing encoder, shared by the evaluation tests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from lamra.data.mbeir import InstructionRow, write_instructions, write_jsonl, write_qrels

CONCEPTS = ["apple", "banana", "cherry", "dog", "cat", "fish", "tree", "house", "car", "boat", "star", "moon"]
COLOURS = ["red", "blue", "green", "black", "white"]
GARMENTS = ["dress", "shirt", "skirt", "coat", "scarf"]
STOPWORDS = {"a", "an", "the", "of", "with", "it", "make", "version", "what", "is", "has", "this", "that"}


def _query(qid, task_id, modality, txt=None, img=None, positives=()):
    return {"qid": qid, "query_txt": txt, "query_img_path": img, "query_modality": modality,
            "query_src_content": None, "pos_cand_list": list(positives), "neg_cand_list": [], "task_id": task_id}


def _cand(did, modality, txt=None, img=None):
    return {"txt": txt, "img_path": img, "modality": modality, "did": did, "src_content": None}


def build_toy_mbeir(root: Path) -> Path:
    """Four tasks (t->i, t->t, (i,t)->i and FashionIQ-like (i,t)->i), val and test, local + global pools."""
    pools = {
        ("toyname", 0): [_cand(f"10:{i}", "image", img=f"images/google/{c}.png") for i, c in enumerate(CONCEPTS)],
        ("toypassage", 1): [_cand(f"11:{i}", "text", txt=f"{c}: {'a pet animal' if c in ('dog', 'cat') else 'a thing'} called {c}")
                            for i, c in enumerate(CONCEPTS)],
        ("toyvariant", 7): [_cand(f"16:{i}", "image", img=f"images/twitter/{c}.png") for i, c in enumerate(CONCEPTS)],
        ("fashioniq", 7): [_cand(f"7:{i * 5 + j}", "image", img=f"images/fashion/{colour}_{garment}.png")
                           for i, colour in enumerate(COLOURS) for j, garment in enumerate(GARMENTS)],
    }
    did_of = {c: i for i, c in enumerate(CONCEPTS)}
    queries = {
        ("toyname", 0, "test"): [_query(f"10:{n}", 0, "text", txt=f"a photo of the {c}", positives=[f"10:{did_of[c]}"])
                                 for n, c in enumerate(["apple", "dog", "moon", "boat"])]
                                + [_query("10:4", 0, "text", txt="a cat next to a dog", positives=["10:4"])],
        ("toyname", 0, "val"): [_query(f"10:{n}", 0, "text", txt=f"the {c}", positives=[f"10:{did_of[c]}"])
                                for n, c in zip(range(10, 13), ["banana", "fish", "car"])],
        ("toypassage", 1, "test"): [_query("11:0", 1, "text", txt="which pet animal", positives=["11:3", "11:4"]),
                                    _query("11:1", 1, "text", txt="something called tree", positives=["11:6"]),
                                    _query("11:2", 1, "text", txt="a thing", positives=["11:10"])],
        ("toypassage", 1, "val"): [_query("11:10", 1, "text", txt="called star", positives=["11:10"])],
        ("toyvariant", 7, "test"): [_query("16:0", 7, "image,text", txt="the dog version", img="images/google/cat.png",
                                           positives=["16:3"]),
                                    _query("16:1", 7, "image,text", txt="now a house", img="images/google/tree.png",
                                           positives=["16:7"])],
        ("toyvariant", 7, "val"): [_query("16:5", 7, "image,text", txt="a moon", img="images/google/star.png",
                                          positives=["16:11"])],
        ("fashioniq", 7, "test"): [_query("7:0", 7, "image,text", txt="make it red", img="images/fashion/blue_dress.png",
                                          positives=["7:0"]),
                                   _query("7:1", 7, "image,text", txt="green with a coat", img="images/fashion/white_shirt.png",
                                          positives=["7:13"])],
        ("fashioniq", 7, "val"): [_query("7:5", 7, "image,text", txt="make it black", img="images/fashion/red_scarf.png",
                                         positives=["7:19"])],
    }
    for (name, task), candidates in pools.items():
        write_jsonl(root / f"cand_pool/local/mbeir_{name}_task{task}_cand_pool.jsonl", candidates)
    everything = [c for candidates in pools.values() for c in candidates]
    for split in ("val", "test"):
        write_jsonl(root / f"cand_pool/global/mbeir_union_{split}_cand_pool.jsonl", everything)
    for (name, task, split), records in queries.items():
        write_jsonl(root / f"query/{split}/mbeir_{name}_task{task}_{split}.jsonl", records)
        write_qrels(root / f"qrels/{split}/mbeir_{name}_task{task}_{split}_qrels.txt",
                    {q["qid"]: q["pos_cand_list"] for q in records}, task)
    write_instructions(root / "instructions/query_instructions.tsv", [
        InstructionRow("text", "image", "ToyName", "10", ["find the picture", "show an image of this", "retrieve a photo"]),
        InstructionRow("text", "text", "ToyPassage", "11", ["find the passage", "retrieve a definition"]),
        InstructionRow("image,text", "image", "ToyVariant", "16", ["change the picture as asked", "find the edited image"]),
        InstructionRow("image,text", "image", "FashionIQ", "7", ["find the garment described", "shop for this"]),
    ])
    return root


class HashingEncoder:
    """A bag of hashed words: text words, plus the words of an image's file name ("red_dress" -> red,
    dress). Deterministic and instant; it records the instruction each item was encoded with."""

    name = "hashing-encoder"

    def __init__(self, dims: int = 256, supported_modalities=None):
        self.dims = dims
        if supported_modalities is not None:
            self.supported_modalities = set(supported_modalities)
        self.instruction_of: dict[tuple[str, str], str | None] = {}
        self.texts: dict[tuple[str, str], str | None] = {}
        self.candidate_calls = 0

    def _tokens(self, item) -> list[str]:
        if isinstance(item, str):
            item = {"txt": item}
        words = re.findall(r"[a-z]+", (item.get("txt") or "").lower())
        if item.get("img_path"):
            words += Path(item["img_path"]).stem.split("_")
        return [w for w in words if w not in STOPWORDS]

    def encode(self, items, instruction=None, batch_size=32, show_progress=False, image_root=None, role="query"):
        vectors = np.zeros((len(items), self.dims), np.float32)
        vectors[:, 0] = 0.01  # never a zero vector
        for row, item in enumerate(items):
            if isinstance(item, dict):
                key = ("query", item["qid"]) if "qid" in item else ("candidate", item.get("did"))
                self.instruction_of[key] = instruction
                self.texts[key] = f"{instruction} {item['txt']}" if instruction else item["txt"]
            for word in self._tokens(item):
                vectors[row, 1 + int(hashlib.md5(word.encode()).hexdigest(), 16) % (self.dims - 1)] += 1.0
        if items and isinstance(items[0], dict) and "did" in items[0]:
            self.candidate_calls += 1
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class RecordingHashingEncoder(HashingEncoder):
    """A HashingEncoder for other processes (Ray workers): appends the dids' texts it encodes to
    ``log`` and raises after ``fail_after`` encode calls (a worker killed mid-run)."""

    def __init__(self, log: str, fail_after: int | None = None):
        super().__init__()
        self.log, self.fail_after, self.calls = log, fail_after, 0

    def encode(self, items, *args, **kwargs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("worker killed (test)")
        with open(self.log, "a") as handle:
            handle.write("".join(f"{item.get('txt')}|{item.get('img_path')}\n" for item in items))
        return super().encode(items, *args, **kwargs)
