"""`max_minutes`: a run measured to be too slow is shortened to fit, and a resume keeps that length."""

from pathlib import Path

import pytest
import torch

import lamra.train.trainer as trainer_module
from lamra.train.recipe import recipe_from_dict
from lamra.train.trainer import BUDGET_PROBE_STEPS, Trainer


class FakeClock:
    """perf_counter stand-in; the step function moves it `per_step` seconds per step."""

    def __init__(self, per_step: float):
        self.now, self.per_step = 0.0, per_step

    def __call__(self) -> float:
        return self.now


def make_trainer(tmp_path, clock, max_minutes, max_steps=100, warmup_ratio=0.0):
    recipe = recipe_from_dict({
        "stage": "stage1", "output_dir": str(tmp_path / "run"), "max_steps": max_steps, "batch_size": 2,
        "lr": 0.1, "save_every": 5, "max_minutes": max_minutes, "warmup_ratio": warmup_ratio,
    })
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = torch.randn(8, 3)

    def step_fn(indices, epoch):
        clock.now += clock.per_step
        loss = model(data[indices]).pow(2).mean()
        loss.backward()
        return float(loss.detach())

    return Trainer(recipe, model, num_examples=8, step_fn=step_fn)


def test_a_slow_run_is_shortened_to_its_budget_and_resumes_at_that_length(tmp_path, monkeypatch):
    clock = FakeClock(per_step=3.0)  # 1 minute holds 20 steps of 3 s; the recipe asks for 100
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    trainer = make_trainer(tmp_path, clock, max_minutes=1.0)
    result = trainer.train(stop_after=15, show_progress=False)
    assert trainer.total_steps == 20 and result.total_steps == 20
    assert len(result.losses) == 15
    # the cosine now ends at step 20: the lr at step 15 is the 20-step schedule's, not the 100-step one's
    expected = 0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 15 / 20))).item()
    assert abs(trainer.optimizer.param_groups[0]["lr"] - expected) < 1e-9

    resumed = make_trainer(tmp_path, clock, max_minutes=1.0)  # from checkpoint-15
    result = resumed.train(show_progress=False)
    assert resumed.total_steps == 20 and len(result.losses) == 5 and resumed.finished


def test_the_warmup_in_progress_keeps_its_length(tmp_path, monkeypatch):
    clock = FakeClock(per_step=3.0)
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    trainer = make_trainer(tmp_path, clock, max_minutes=1.0, warmup_ratio=0.15)  # 15 warmup steps of 100
    lrs = []
    trainer.optimizer.step = lambda *a, _step=trainer.optimizer.step, **k: (lrs.append(trainer.optimizer.param_groups[0]["lr"]), _step(*a, **k))
    trainer.train(stop_after=14, show_progress=False)
    assert trainer.total_steps == 20
    assert lrs == pytest.approx([0.1 * step / 15 for step in range(14)])  # no jump when the run was cut at step 10


def test_a_fast_run_keeps_its_length(tmp_path, monkeypatch):
    clock = FakeClock(per_step=0.1)
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    trainer = make_trainer(tmp_path, clock, max_minutes=1.0, max_steps=30)
    result = trainer.train(show_progress=False)
    assert trainer.total_steps == 30 and len(result.losses) == 30 > BUDGET_PROBE_STEPS


def test_the_training_report_reads_the_gpu_profiles_runs(tmp_path):
    from lamra.train.report import GPU_STAGES, STAGES, stage_rows

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    assert all((recipes / f"{name}.yaml").is_file() for _, name in GPU_STAGES)  # names that train_compact.sh runs
    run = tmp_path / dict(GPU_STAGES)["stage2"]
    run.mkdir()
    (run / "losses.jsonl").write_text('{"step": 1, "loss": 4.0, "seconds": 30.0}\n{"step": 2, "loss": 2.0, "seconds": 30.0}\n')
    rows, logs = stage_rows(tmp_path, GPU_STAGES)
    assert rows[2] == "| stage2 | 2 | 1.0 | 4.000 | 3.000 |" and list(logs) == ["stage2"]
    assert stage_rows(tmp_path, STAGES)[0][2] == "| stage2 | not run | | | |"


def test_a_run_ends_at_its_checkpoint_when_max_steps_is_set_to_it_and_refuses_other_lengths(tmp_path, monkeypatch):
    from lamra.train.trainer import ResumeError

    clock = FakeClock(per_step=0.1)
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    first = make_trainer(tmp_path, clock, max_minutes=None, max_steps=30)
    first.train(stop_after=10, show_progress=False)  # stopped by hand after checkpoint-10
    weights = first.model.weight.detach().clone()
    with pytest.raises(ResumeError, match="run of 30 steps.*set max_steps=10 to end the run at this checkpoint"):
        make_trainer(tmp_path, clock, max_minutes=None, max_steps=20).train(show_progress=False)
    ended = make_trainer(tmp_path, clock, max_minutes=None, max_steps=10)
    result = ended.train(show_progress=False)
    assert result.losses == [] and result.total_steps == 10 and ended.finished
    assert torch.equal(ended.model.weight, weights)  # the checkpoint's weights, no step taken
