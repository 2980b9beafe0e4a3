"""Data formats: M-BEIR's files read and written (``lamra.data.mbeir``), its records as the items
encoders read (``lamra.data.mbeir_items``) and SimCSE's NLI csv of stage-1 pairs
(``lamra.data.nli_csv``). The offline benchmark builder is ``lamra.pocketbeir``."""

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
