"""Package a trained compact LamRA for shipping: one light checkpoint holding LamRA-Ret and -Rank.

    python -m lamra.train.package RETRIEVAL_FINAL RANK_FINAL OUT_DIR
    python -m lamra.train.package RETRIEVAL_FINAL OUT_DIR        # LamRA-Ret alone

``RETRIEVAL_FINAL`` is stage 2's ``final/`` (projector + stage-1 and stage-2 adapters),
``RANK_FINAL`` the rank stage's ``final/`` (stage 0's projector + the rank adapter). When stage 2
trained the projector too, each role keeps its own (``roles`` in ``lamra.json``). A reranker trained
on top of a packaged LamRA-Ret (``rank_from_retriever``) is packaged with that package as
``RETRIEVAL_FINAL``: its retrieval role is kept byte for byte. Adapter and
projector tensors are stored in bfloat16 (half the bytes; LoRA deltas lose nothing that matters at
this scale). Written to a temp folder and renamed into place.

To fit the 30 MB budget, the stage-1 and stage-2 adapters are folded into one retrieval delta per
module (exact: merging them in order adds their deltas) and that rank-32 sum is cut to its best
rank-``RETRIEVAL_RANK`` approximation by SVD; the packaged model is what gets evaluated.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from lamra.atomic_io import atomic_directory
from lamra.light_checkpoint import (
    CONFIG_NAME,
    PROJECTOR_FILE,
    RETRIEVAL_PROJECTOR_FILE,
    CHANNELS,
    load_channel,
    read_light_config,
    role_digest,
    role_vision,
    set_channel,
    write_light_config,
)
from lamra.train.trainer import HARDWARE_LOG


RETRIEVAL_RANK = 24  # with a second projector, keeps the package under 30 MB


def lora_deltas(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Module name -> its weight delta ``scale * B @ A`` (float32)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    deltas = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            b, a = tensors[f"{module}.lora_B.weight"].float(), tensors[key].float()
            deltas[module] = scale * b @ a
    return deltas


def fold_adapters(adapter_dirs: list[Path], out: Path, rank: int) -> float:
    """Write one peft adapter whose delta is the best rank-``rank`` approximation of the sum of the
    adapters' deltas; returns the largest relative (Frobenius) error over modules."""
    total: dict[str, torch.Tensor] = {}
    for adapter_dir in adapter_dirs:
        for module, delta in lora_deltas(adapter_dir).items():
            total[module] = total[module] + delta if module in total else delta
    tensors, worst = {}, 0.0
    for module, delta in total.items():
        u, singular, vh = torch.linalg.svd(delta, full_matrices=False)
        root = singular[:rank].sqrt()
        b, a = u[:, :rank] * root, root[:, None] * vh[:rank]
        worst = max(worst, float((delta - b @ a).norm() / delta.norm().clamp_min(1e-12)))
        tensors[f"{module}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
        tensors[f"{module}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = json.loads((adapter_dirs[-1] / "adapter_config.json").read_text())
    config.update(r=rank, lora_alpha=rank, lora_dropout=0.0)  # scale 1: the factors carry it
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return worst


def to_bf16(path: Path) -> None:
    tensors = load_file(path)
    if all(v.dtype == torch.bfloat16 for v in tensors.values()):
        return  # leave the bytes (and so the role digests) as they are
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(path))


def read_hardware(final: Path, role: str = "retrieval", seen: frozenset = frozenset()) -> list[dict]:
    """Where the weights of a ``final/`` were trained: the hardware records of its run and of the runs
    it grew from (each run's ``init_from``, followed while those runs are on disk), earliest first,
    each with its run's name. A package (a run's ``init_from`` with ``continue_adapter``, or a shipped
    reranker packaged again beside a new retriever) gives its own record of ``role``; a run that grew
    from a package takes the package's record of its retrieval role. Empty for runs older than the log."""
    packaged = read_light_config(final).get("trained_on") if (final / CONFIG_NAME).is_file() else None
    if packaged is not None:  # a package says where its roles were trained; a run's final/ does not
        return packaged.get(role, [])
    run = final.parent
    if run in seen or not (run / HARDWARE_LOG).is_file():
        return []
    records = [{"run": run.name, **record} for record in json.loads((run / HARDWARE_LOG).read_text())]
    recipe = run / "recipe.yaml"
    init_from = yaml.safe_load(recipe.read_text()).get("init_from") if recipe.is_file() else None
    return (read_hardware(Path(init_from), "retrieval", seen | {run}) if init_from else []) + records


def fold_retrieval(retrieval_final: Path, folder: Path) -> None:
    """``adapters/retrieval`` in ``folder``: the run's retrieval adapters folded into one."""
    names = read_light_config(retrieval_final)["retrieval_adapters"]
    error = fold_adapters([retrieval_final / name for name in names], folder / "adapters" / "retrieval", RETRIEVAL_RANK)
    print(f"retrieval adapters folded to rank {RETRIEVAL_RANK}: worst relative error {error:.4f}")


def package_retrieval(retrieval_final: Path, out_dir: Path) -> Path:
    """LamRA-Ret alone (its adapters folded, bf16): what a reranker trained on top of it starts from."""
    retrieval = read_light_config(retrieval_final)
    vision = role_vision(retrieval, "retrieval")
    with atomic_directory(out_dir) as folder:
        shutil.copy(retrieval_final / vision["projector"], folder / PROJECTOR_FILE)
        fold_retrieval(retrieval_final, folder)
        for tensors in folder.rglob("*.safetensors"):
            to_bf16(tensors)
        hardware = read_hardware(retrieval_final)
        write_light_config(folder, retrieval["image_grid"], ["adapters/retrieval"], None,
                           vision["global_image_token"], None, {"retrieval": hardware} if hardware else None)
    return out_dir


def package_compact(retrieval_final: Path, rank_final: Path, out_dir: Path) -> Path:
    retrieval, rank = read_light_config(retrieval_final), read_light_config(rank_final)
    if not rank.get("rank_adapter"):
        raise ValueError(f"{rank_final} holds no rank adapter")
    if "adapters" in rank.get("roles", {}).get("rank", {}):
        return _package_stacked(retrieval_final, retrieval, rank_final, rank, out_dir)
    retrieval_vision, rank_vision = role_vision(retrieval, "retrieval"), role_vision(rank, "rank")
    retrieval_projector = load_file(retrieval_final / retrieval_vision["projector"])
    rank_projector = load_file(rank_final / rank_vision["projector"])
    shared = retrieval_vision["global_image_token"] == rank_vision["global_image_token"] and all(
        torch.equal(retrieval_projector[k].float(), rank_projector[k].float()) for k in retrieval_projector
    )
    with atomic_directory(out_dir) as folder:
        shutil.copy(rank_final / rank_vision["projector"], folder / PROJECTOR_FILE)
        roles = None
        if not shared:
            shutil.copy(retrieval_final / retrieval_vision["projector"], folder / RETRIEVAL_PROJECTOR_FILE)
            roles = {
                "retrieval": {"projector": RETRIEVAL_PROJECTOR_FILE,
                              "global_image_token": retrieval_vision["global_image_token"]},
                "rank": {"projector": PROJECTOR_FILE, "global_image_token": rank_vision["global_image_token"]},
            }
        fold_retrieval(retrieval_final, folder)
        rank_dir = folder / "adapters" / "rank"
        rank_dir.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(rank_final / rank["rank_adapter"] / name, rank_dir / name)
        for tensors in folder.rglob("*.safetensors"):
            to_bf16(tensors)
        if retrieval["image_grid"] != rank["image_grid"]:
            raise ValueError(f"LamRA-Ret has a {retrieval['image_grid']}-grid, LamRA-Rank a {rank['image_grid']}-grid")
        trained_on = {role: read_hardware(final, role) for role, final in (("retrieval", retrieval_final), ("rank", rank_final))}
        write_light_config(folder, retrieval["image_grid"], ["adapters/retrieval"], "adapters/rank",
                           rank_vision["global_image_token"], roles, {k: v for k, v in trained_on.items() if v})
    return out_dir


def _package_stacked(retrieval_final: Path, retrieval: dict, rank_final: Path, rank: dict, out_dir: Path) -> Path:
    """A reranker trained on top of a LamRA-Ret (``rank_from_retriever``): its ``final/`` already
    holds both roles, the retrieval one copied from where it started. That must be
    ``retrieval_final`` itself (usually the package shipped before), so the retrieval role and every
    cache keyed by its digest stay as they were; only the dtype of the new files changes. The run
    does not carry the retriever's score channels (``lamra.appearance``, ``lamra.colour``): the
    package gets them from ``retrieval_final``."""
    if role_digest(retrieval_final, "retrieval", channels=False) != role_digest(rank_final, "retrieval", channels=False):
        raise ValueError(f"{rank_final} was trained on top of another LamRA-Ret than {retrieval_final}: "
                         "package with the retriever its recipe's init_from named")
    with atomic_directory(out_dir) as folder:
        shutil.copytree(rank_final, folder, dirs_exist_ok=True)
        for tensors in folder.rglob("*.safetensors"):
            to_bf16(tensors)  # the copied retrieval files are bf16 already: their bytes do not change
        trained_on = {"retrieval": retrieval.get("trained_on", {}).get("retrieval") or read_hardware(retrieval_final),
                      "rank": read_hardware(rank_final)}
        write_light_config(folder, rank["image_grid"], rank["retrieval_adapters"], rank["rank_adapter"],
                           rank["global_image_token"], rank["roles"], {k: v for k, v in trained_on.items() if v})
        for kind in CHANNELS:
            set_channel(folder, kind, load_channel(retrieval_final, kind))
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(package_retrieval(Path(sys.argv[1]), Path(sys.argv[2])))
    elif len(sys.argv) == 4:
        print(package_compact(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
