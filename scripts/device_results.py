"""Fit the runs that scripts/device_train.py copied to $OUT into what a `device` call sends back.

A call returns at most 8 files of at most 16 MB each, no deeper than $OUT/a/b/file; a run's final/
is a tree of folders whose float32 adapters alone can pass 16 MB. This casts every float32
safetensors file under each run's folder to bfloat16 (what `lamra.train.package` stores anyway),
drops the paths given with --drop (e.g. a reranker's copy of the retrieval role it started from,
which the package it came from already holds), and replaces each run's folder with one tar file:

    python3 scripts/device_results.py "$OUT" --drop final/adapters/retrieval \
        --drop final/projector_retrieval.safetensors

At home: `tar -xf <run>.tar -C runs/` gives runs/<run>/ back, with final/, losses.jsonl and train.log.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def cast_to_bf16(path: Path) -> None:
    tensors = load_file(path)
    save_file({name: t.to(torch.bfloat16) if t.dtype == torch.float32 else t for name, t in tensors.items()},
              path, metadata={"format": "pt"})


def pack_run(run: Path, drop: list[str]) -> Path:
    for relative in drop:
        target = run / relative
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for tensors in run.rglob("*.safetensors"):
        cast_to_bf16(tensors)
    archive = run.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(run, arcname=run.name)
    shutil.rmtree(run)
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the folder scripts/device_train.py wrote ($OUT)")
    parser.add_argument("--drop", action="append", default=[], help="a path inside each run's folder to leave out")
    args = parser.parse_args()
    for run in sorted(path for path in args.out.iterdir() if path.is_dir()):
        archive = pack_run(run, args.drop)
        print(f"{archive.name}: {archive.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
