"""A score channel's file: named float arrays and a few numbers, in safetensors, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from lamra.atomic_io import atomic_write


def save_channel_file(path: str | os.PathLike, arrays: dict[str, np.ndarray], numbers: dict[str, float],
                      half: tuple[str, ...] = ()) -> Path:
    """Arrays as tensors (those named in ``half`` stored in float16), numbers as metadata."""
    tensors = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in arrays.items()}
    tensors.update({name: tensors[name].half() for name in half})
    metadata = {name: repr(float(value)) for name, value in numbers.items()}
    data = _metadata_sorted(save(tensors, metadata=metadata))
    return atomic_write(Path(path), lambda temp: Path(temp).write_bytes(data))


def _metadata_sorted(data: bytes) -> bytes:
    """The same file with its metadata entries in name order. safetensors writes them in hash-map
    order, which differs between runs: one channel saved twice would get two digests
    (``lamra.light_checkpoint.role_digest`` hashes the bytes)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    return data[:8] + text.ljust(length) + data[8 + length :]  # same entries, same length: padded as before


def load_channel_file(path: str | os.PathLike, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(float32 arrays, metadata) of a channel file; an unreadable one raises ValueError naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        return {name: value.float().numpy() for name, value in load_file(str(path)).items()}, metadata
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"cannot read the {what} {path}: {error}") from None
