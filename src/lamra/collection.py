"""A user's collection: a jsonl file, one candidate a line, with ``txt`` and/or ``img_path``.

M-BEIR candidate pools are such files too (their ``did`` is the id). Errors name file:line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lamra.items import InputError


def read_collection(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"collection file not found: {str(path)!r}")
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            if not isinstance(record, dict) or not (record.get("txt") or record.get("img_path")):
                raise InputError(f"{path}:{number}: a candidate needs 'txt' and/or 'img_path'")
            records.append(record)
    if not records:
        raise InputError(f"collection {str(path)!r} is empty")
    return records


def record_id(record: dict, position: int) -> str:
    return str(record.get("did") or record.get("id") or position)
