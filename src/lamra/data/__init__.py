"""Data: the M-BEIR reader/writer (``lamra.data.mbeir``), the offline PocketBEIR benchmark builder
(``lamra.data.pocketbeir``) and the stage-1 language-only pairs (``lamra.data.textpairs``)."""

from lamra.data.mbeir import (
    TASKS,
    MBEIRCandidate,
    MBEIRDataset,
    MBEIRFormatError,
    MBEIRQuery,
    read_instructions,
    read_jsonl,
    read_qrels,
    write_instructions,
    write_jsonl,
    write_qrels,
)

__all__ = [
    "TASKS",
    "MBEIRCandidate",
    "MBEIRDataset",
    "MBEIRFormatError",
    "MBEIRQuery",
    "read_instructions",
    "read_jsonl",
    "read_qrels",
    "write_instructions",
    "write_jsonl",
    "write_qrels",
]
