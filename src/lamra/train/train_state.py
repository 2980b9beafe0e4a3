"""Training checkpoints that survive SIGKILL: written to a temp dir, published by one rename.

Layout of `run_dir/checkpoint-{step}/`:
  trainable.safetensors  the parameters with requires_grad (LoRA weights, a projector, ...)
  optimizer.pt           optimizer.state_dict()
  scheduler.pt           scheduler.state_dict()
  rng-rank{r}.pt         python / numpy / torch (CPU, CUDA) RNG states of each rank
  meta.json              step, world size, data-order state, anything extra (JSON values)

A directory only ever appears under its final name complete, so `latest_checkpoint` never sees a
half-written one; leftovers of a killed save (`.tmp-checkpoint-*`) are ignored and cleaned up.
In multi-process runs every rank calls save/load (each keeps its own RNG stream); rank 0 writes
the shared files.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from lamra.train.distributed import barrier, is_main_process, rank, world_size

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """What a resumed run needs besides the restored objects."""

    step: int
    path: Path
    data_state: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP, so names do not depend on how the run was launched."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters with requires_grad, by name (for a peft model: the adapter weights)."""
    return {name: param.detach() for name, param in unwrap(model).named_parameters() if param.requires_grad}


def load_trainable_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "") -> None:
    """Copy saved trainable parameters back in place; names must match exactly."""
    params = {name: param for name, param in unwrap(model).named_parameters() if param.requires_grad}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {source} does not fit this model's trainable parameters: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for entry in run_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match and (entry / "meta.json").is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    data_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Save the training state after `step` optimizer steps; keep the newest `keep_last`.

    Call on every rank (collective when distributed); `model` may be DDP-wrapped.
    `data_state` and `extra` must be JSON-serialisable.
    """
    run_dir = Path(run_dir)
    final = checkpoint_dir(run_dir, step)
    temp = run_dir / f".tmp-checkpoint-{step}"
    meta = {
        "format": FORMAT_VERSION,
        "step": int(step),
        "world_size": world_size(),
        "data_state": data_state or {},
        "extra": extra or {},
    }
    json.dumps(meta)  # fail before writing anything if a value is not JSON

    if is_main_process():
        if temp.exists():
            shutil.rmtree(temp)
        temp.mkdir(parents=True)
    barrier()
    _write(temp / f"rng-rank{rank()}.pt", lambda f: torch.save(capture_rng_state(), f))
    if is_main_process():
        tensors = {name: t.contiguous().clone() for name, t in trainable_state_dict(model).items()}
        _write(temp / "trainable.safetensors", lambda f: f.write(safetensors_bytes(tensors, metadata={"format": "pt"})))
        if optimizer is not None:
            _write(temp / "optimizer.pt", lambda f: torch.save(optimizer.state_dict(), f))
        if scheduler is not None:
            _write(temp / "scheduler.pt", lambda f: torch.save(scheduler.state_dict(), f))
        _write(temp / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
    barrier()
    if is_main_process():
        _publish(temp, final)
        if keep_last is not None:
            prune_checkpoints(run_dir, keep_last)
    barrier()
    return final


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> TrainState:
    """Restore what `save_checkpoint` wrote (in place) and return the step and data state."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no meta.json)")
    meta = json.loads(meta_file.read_text())
    load_trainable_state_dict(model, load_file(path / "trainable.safetensors"), source=str(path))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if restore_rng:
        rng_file = path / f"rng-rank{rank()}.pt"
        if not rng_file.is_file():  # resumed with more processes than were saved
            rng_file = path / "rng-rank0.pt"
        restore_rng_state(torch.load(rng_file, weights_only=True))
    return TrainState(
        step=int(meta["step"]), path=path, data_state=meta.get("data_state", {}), extra=meta.get("extra", {})
    )


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, and leftovers of interrupted saves."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    run_dir = Path(run_dir)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in run_dir.glob(".tmp-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in run_dir.glob(".old-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def capture_rng_state() -> dict[str, Any]:
    """All RNG states a training step may draw from, in torch.load(weights_only=True)-safe types."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state: Any) -> tuple:
    # torch.load may hand back lists where random.getstate() had tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _write(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _publish(temp: Path, final: Path) -> None:
    """Rename temp -> final; an existing final (same step saved again) is replaced."""
    _fsync_dir(temp)
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
        os.rename(temp, final)
        shutil.rmtree(old)
    else:
        os.rename(temp, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
