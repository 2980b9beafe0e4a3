"""What computed an evaluation: the numerics, the libraries, the machine and the code's commit.

``results.json`` carries it so that a number can be traced to what produced it. Under bf16 autocast a
CPU's kernels change the last bits of every vector and move a task's recall by a few queries between
machines; float32 numbers agree across machines to float32's last bits.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from lamra.retriever import uses_bf16_autocast

LIBRARIES = ("lamra", "torch", "transformers", "peft", "faiss-cpu", "faiss-gpu", "numpy", "openvino")


def evaluation_environment(encoder: Any) -> dict[str, Any]:
    return {
        "numerics": numerics(encoder),
        "versions": library_versions(),
        "machine": machine(),
        "lamra_commit": source_commit(),
    }


def numerics(encoder: Any) -> str | None:
    """How a LamRA model computes: "float32", or "bf16 autocast" / "bf16 autocast, bfloat16 weights", or
    "OpenVINO bf16" / "OpenVINO float32"; None for an encoder that is not a LamRA model (the baselines
    compute in float32)."""
    backbone, precision = getattr(encoder, "backbone", None), getattr(encoder, "precision", None)
    if backbone is None or precision is None:
        return None
    engine = getattr(getattr(backbone, "hf_model", None), "engine", None)
    if engine is not None:
        return f"OpenVINO {'bf16' if engine.precision == 'bf16' else 'float32'}"
    weights = str(next(backbone.model.parameters()).dtype).removeprefix("torch.")
    parts = ["bf16 autocast"] if uses_bf16_autocast(backbone.device, precision) else []
    if weights != "float32":
        parts.append(f"{weights} weights")
    return ", ".join(parts) or "float32"


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": _cpu_name(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit() -> str | None:
    """The git commit of the lamra source that ran, "+dirty" when the package's files had uncommitted
    changes; None outside a git checkout (an installed wheel)."""
    package = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=package,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
