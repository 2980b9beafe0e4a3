"""Checkpoints: atomic save, restore of every state, and a SIGKILLed run that resumes exactly."""

import json
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lamra.train.train_state import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    trainable_state_dict,
)
from lamra.train.schedule import cosine_with_warmup


def make_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.2), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen: not part of the checkpoint
    return model


def trained_state():
    model = make_model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = cosine_with_warmup(optimizer, total_steps=10, warmup_ratio=0.2)
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
    return model, optimizer, scheduler


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = trained_state()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, data_state={"epoch": 1, "seen": [1, 2]})
    assert path == tmp_path / "checkpoint-3"
    assert set(trainable_state_dict(model)) == {"0.weight", "2.weight", "2.bias"}
    draws = (random.random(), np.random.rand(), torch.rand(1))

    fresh, fresh_optimizer, fresh_scheduler = make_model(), None, None
    fresh_optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    fresh_scheduler = cosine_with_warmup(fresh_optimizer, total_steps=10, warmup_ratio=0.2)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    state = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)

    assert (state.step, state.data_state) == (3, {"epoch": 1, "seen": [1, 2]})
    assert (random.random(), np.random.rand(), torch.rand(1)) == draws
    for name, value in trainable_state_dict(model).items():
        assert torch.equal(trainable_state_dict(fresh)[name], value)
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for a, b in zip(fresh_optimizer.state.values(), optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_latest_ignores_incomplete_saves_and_old_ones_are_pruned(tmp_path):
    model = make_model()
    assert latest_checkpoint(tmp_path / "missing") is None
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, model, keep_last=2)
    (tmp_path / ".tmp-checkpoint-8").mkdir()  # a save killed half-way
    (tmp_path / "checkpoint-10").mkdir()  # no meta.json: not a checkpoint
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    save_checkpoint(tmp_path, 6, model, data_state={"again": True}, keep_last=2)  # same step: replaced
    assert load_checkpoint(tmp_path / "checkpoint-6", model).data_state == {"again": True}
    assert not (tmp_path / ".tmp-checkpoint-8").exists()


def test_clear_errors(tmp_path):
    model = make_model()
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 1, model, data_state={"order": object()})
    assert not any(tmp_path.iterdir())  # nothing written for a bad save
    path = save_checkpoint(tmp_path, 1, model)
    other = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint(path, other)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "checkpoint-7", model)


# A toy contrastive run that draws from every RNG (python, numpy, torch dropout), crosses epochs,
# uses GradCache, AdamW and the cosine schedule, and checkpoints every 3 steps. With HANG_AT it
# stops mid-step after the checkpoint of that step (weights already changed in memory) and waits
# to be killed.
TOY_RUN = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path
    import numpy as np, torch
    from lamra.train.train_state import latest_checkpoint, load_checkpoint, save_checkpoint
    from lamra.train.gradcache import GradCache
    from lamra.train.schedule import BatchOrder, cosine_with_warmup

    run_dir, total_steps, hang_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    random.seed(0); np.random.seed(0); torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 8)
    ).double()
    model[0].bias.requires_grad_(False)
    data = torch.randn(2, 40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    scheduler = cosine_with_warmup(optimizer, total_steps, warmup_ratio=0.2)
    order = BatchOrder(num_examples=40, global_batch_size=8, seed=7)  # 5 steps per epoch
    grad_cache = GradCache(model, chunk_size=3)

    start = 0
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, model, optimizer, scheduler).step
    for step in range(start, total_steps):
        indices = order.global_indices(step)
        jitter = random.random() * torch.from_numpy(np.random.randn(8, 6)) * 0.1
        loss = grad_cache.step(data[0][indices] + jitter, data[1][indices])
        optimizer.step(); scheduler.step(); optimizer.zero_grad()
        if step == hang_at:
            print("HANGING", flush=True)
            time.sleep(600)
        with open(run_dir / "losses.jsonl", "a") as log:
            log.write(json.dumps({"step": step + 1, "loss": loss.item()}) + "\\n")
        if (step + 1) % 3 == 0:
            save_checkpoint(run_dir, step + 1, model, optimizer, scheduler,
                            data_state={"epoch": order.epoch_of(step + 1)}, keep_last=2)
    torch.save(model.state_dict(), run_dir / "final.pt")
    """
)
TOTAL_STEPS = 12


def run_toy(script, run_dir, hang_at=-1):
    run_dir.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(TOTAL_STEPS), str(hang_at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process):
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}  # a resumed run rewrites later steps


def test_sigkilled_run_resumes_to_the_same_weights_and_losses(tmp_path):
    script = tmp_path / "toy_run.py"
    script.write_text(TOY_RUN)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = run_toy(script, straight)

    victim = run_toy(script, killed, hang_at=6)  # checkpoint-6 saved, step 7 half done
    assert victim.stdout.readline().strip() == "HANGING"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed) == killed / "checkpoint-6"
    assert not (killed / "final.pt").exists()
    (killed / ".tmp-checkpoint-9").mkdir()  # as if a save had been killed too

    finish(run_toy(script, killed))  # resumes from checkpoint-6
    finish(uninterrupted)

    expected, resumed = losses(straight), losses(killed)
    assert sorted(resumed) == list(range(1, TOTAL_STEPS + 1))
    for step in range(7, TOTAL_STEPS + 1):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-12, abs=1e-14), step
    assert len(set(expected.values())) == TOTAL_STEPS  # the losses really move
    final_straight = torch.load(straight / "final.pt")
    final_resumed = torch.load(killed / "final.pt")
    for name, value in final_straight.items():
        torch.testing.assert_close(final_resumed[name], value, rtol=1e-12, atol=1e-14)
    assert [p.name for p in list_checkpoints(killed)] == ["checkpoint-9", "checkpoint-12"]
    assert not (killed / ".tmp-checkpoint-9").exists()


def test_resume_without_the_rng_state_diverges(tmp_path):
    """The check above can fail: skipping the RNG restore changes the dropout masks."""
    model, optimizer, scheduler = trained_state()
    torch.manual_seed(9)
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler)
    reference = model(torch.ones(2, 4))
    torch.manual_seed(1)
    load_checkpoint(path, model, restore_rng=False)
    assert not torch.equal(model(torch.ones(2, 4)), reference)
    load_checkpoint(path, model)
    assert torch.equal(model(torch.ones(2, 4)), reference)


def test_a_peft_adapter_round_trips(tmp_path):
    from peft import LoraConfig, get_peft_model

    def lora_model():
        torch.manual_seed(0)
        base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0", "1"]))

    trained = lora_model()
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_()
    path = save_checkpoint(tmp_path, 1, trained)
    assert all("lora_" in name for name in trainable_state_dict(trained))
    fresh = lora_model().eval()
    assert not torch.equal(fresh(torch.ones(1, 4)), trained.eval()(torch.ones(1, 4)))
    load_checkpoint(path, fresh)
    assert torch.equal(fresh(torch.ones(1, 4)), trained(torch.ones(1, 4)))
