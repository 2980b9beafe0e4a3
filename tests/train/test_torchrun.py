"""The stage-1 trainer under ``torchrun --nproc_per_node 2`` (gloo) gives the one-process losses and
adapter weights on the same global batches (tiny Qwen2-VL, fp32, no dropout)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from train_helpers import make_slice, overrides

from lamra.train.recipe import load_recipe
from lamra.train.stages import run_stage



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tiny_qwen_dirs, tmp_path):
    data = make_slice(tmp_path / "data", num_queries=4, num_pairs=16)
    settings = dict(model=str(tiny_qwen_dirs["qwen2_vl"]), max_steps=2, batch_size=8, chunk_size=2, lr=0.01,
                    warmup_ratio=0.0, bf16=False, save_every=100)
    single = run_stage(load_recipe("smoke-qwen2vl-stage1", overrides(data, tmp_path / "one", "stage1", **settings)),
                       show_progress=False)

    values = overrides(data, tmp_path / "two", "stage1", **settings)
    sets = [f"--set={k}={'null' if v is None else v}" for k, v in values.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "lamra.train.cli", "stage1", "--recipe", "smoke-qwen2vl-stage1", "--quiet", *sets]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    run_two = tmp_path / "two" / "smoke-qwen2vl-stage1"
    losses = [json.loads(line)["loss"] for line in (run_two / "losses.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(single.losses, abs=1e-5)
    a = load_file(single.final_dir / "adapter_model.safetensors")
    b = load_file(run_two / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
