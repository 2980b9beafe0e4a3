"""SimCSE's NLI csv (``sent0,sent1,hard_neg``): the stage-1 pairs file, read and written atomically."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from lamra.atomic_io import atomic_write_text
from lamra.data.mbeir import MBEIRFormatError

HEADER = ("sent0", "sent1", "hard_neg")


def write_nli_csv(path: str | os.PathLike, pairs: Iterable[tuple[str, str, str]]) -> int:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    count = 0
    for pair in pairs:
        writer.writerow(pair)
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count


def read_nli_csv(path: str | os.PathLike) -> Iterator[tuple[str, str, str | None]]:
    """Yield ``(sent0, sent1, hard_neg)`` from a SimCSE-style csv (``hard_neg`` None when absent)."""
    path = Path(path)
    if not path.is_file():
        raise MBEIRFormatError(f"{path}: no such file")
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:2]] != ["sent0", "sent1"]:
            raise MBEIRFormatError(f"{path}:1: expected a header 'sent0,sent1[,hard_neg]', got {header!r}")
        has_negative = len(header) > 2 and header[2].strip() == "hard_neg"
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise MBEIRFormatError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
            if not row[0].strip() or not row[1].strip():
                raise MBEIRFormatError(f"{path}:{line}: empty sentence")
            yield row[0], row[1], (row[2] if has_negative and row[2].strip() else None)
