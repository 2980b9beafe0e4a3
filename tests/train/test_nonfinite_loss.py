"""A step whose loss is NaN or inf stops the run before the optimizer writes it into the weights."""

import math

import pytest
import torch

from lamra.train.recipe import recipe_from_dict
from lamra.train.trainer import Trainer


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_nonfinite_loss_stops_the_run_and_keeps_the_weights(tmp_path, bad):
    recipe = recipe_from_dict({"stage": "stage1", "output_dir": str(tmp_path / "run"), "max_steps": 10,
                               "batch_size": 2, "lr": 0.1, "save_every": 2, "warmup_ratio": 0.0})
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = torch.randn(8, 3)
    weights_after = []

    def step_fn(indices, epoch):
        weights_after.append(model.weight.detach().clone())  # the weights this step starts from
        loss = model(data[indices]).pow(2).mean()
        if len(weights_after) == 3:
            loss = loss * bad
        loss.backward()
        return float(loss.detach())

    trainer = Trainer(recipe, model, num_examples=8, step_fn=step_fn)
    with pytest.raises(FloatingPointError, match=r"step 3 is (nan|inf).*after step 2"):
        trainer.train(show_progress=False)
    assert torch.isfinite(model.weight).all()
    assert torch.equal(model.weight, weights_after[2])  # step 3's update was never applied
    assert (tmp_path / "run" / "checkpoint-2").is_dir()


def test_the_cli_reports_a_nonfinite_loss_in_one_line(monkeypatch):
    from typer.testing import CliRunner

    import lamra.train.stages as stages
    from lamra.train.cli import train_app

    def diverged(recipe, show_progress=True):
        raise FloatingPointError("smoke-stage1: the loss of step 3 is nan; the weights are those after step 2")

    monkeypatch.setattr(stages, "run_stage", diverged)
    result = CliRunner().invoke(train_app, ["stage1", "--recipe", "smoke-stage1"])
    assert result.exit_code == 1 and "error: smoke-stage1: the loss of step 3 is nan" in result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output  # typer.Exit, no crash
