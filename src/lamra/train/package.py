"""Package a trained compact LamRA for shipping: one light checkpoint holding LamRA-Ret and -Rank.

    python -m lamra.train.package RETRIEVAL_FINAL RANK_FINAL OUT_DIR

``RETRIEVAL_FINAL`` is stage 2's ``final/`` (projector + stage-1 and stage-2 adapters),
``RANK_FINAL`` the rank stage's ``final/`` (same stage-0 projector + the rank adapter). Adapter and
projector tensors are stored in bfloat16 (half the bytes; LoRA deltas lose nothing that matters at
this scale). Written to a temp folder and renamed into place.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lamra.assets import atomic_directory
from lamra.checkpoints import PROJECTOR_FILE, read_light_config, write_light_config


def to_bf16(path: Path) -> None:
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(path).items()}
    save_file(tensors, str(path))


def package_compact(retrieval_final: Path, rank_final: Path, out_dir: Path) -> Path:
    retrieval, rank = read_light_config(retrieval_final), read_light_config(rank_final)
    if not rank.get("rank_adapter"):
        raise ValueError(f"{rank_final} holds no rank adapter")
    retrieval_projector = load_file(retrieval_final / PROJECTOR_FILE)
    rank_projector = load_file(rank_final / PROJECTOR_FILE)
    if any(not torch.equal(retrieval_projector[k].float(), rank_projector[k].float()) for k in retrieval_projector):
        raise ValueError("LamRA-Ret and LamRA-Rank were trained on different projectors (different stage 0 runs?)")
    staging = atomic_directory(out_dir)
    try:
        shutil.copy(retrieval_final / PROJECTOR_FILE, staging.path / PROJECTOR_FILE)
        for name in retrieval["retrieval_adapters"]:
            shutil.copytree(retrieval_final / name, staging.path / name)
        shutil.copytree(rank_final / rank["rank_adapter"], staging.path / "adapters" / "rank")
        for tensors in staging.path.rglob("*.safetensors"):
            to_bf16(tensors)
        write_light_config(staging.path, retrieval["image_grid"], retrieval["retrieval_adapters"], "adapters/rank")
        staging.commit()
    except BaseException:
        staging.abort()
        raise
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    print(package_compact(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
