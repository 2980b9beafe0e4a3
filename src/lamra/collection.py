"""A user's collection: a jsonl file, one candidate a line, with ``txt`` and/or ``img_path``.

M-BEIR candidate pools are such files too (their ``did`` is the id). Errors name file:line.
"""

from __future__ import annotations

import os
from pathlib import Path

from lamra.data.mbeir import json_lines
from lamra.items import InputError


def read_collection(path: str | os.PathLike) -> list[dict]:
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
        records.append(record)
    if not records:
        raise InputError(f"collection {str(path)!r} is empty")
    return records


def record_id(record: dict, position: int) -> str:
    return str(record.get("did") or record.get("id") or position)
