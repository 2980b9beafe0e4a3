"""The optimisation loop every stage shares: order, optimizer, schedule, checkpoints, progress.

A stage supplies ``step_fn(indices, epoch) -> loss`` (or ``(loss, parts)``, see ``split_loss``): it
runs the forward/backward passes of this process's shard of the batch (``indices`` into its example
list) and leaves the gradients in ``.grad``. The loop then makes the gradients equal to a
one-process run over the global batch (``grad_reduction``: "mean" for the gathered contrastive loss,
whose backward already holds W times the gradient on each rank; "sum" for next-token losses divided
by the global token count), clips, steps AdamW and the cosine schedule, logs, and checkpoints every
``save_every`` steps. The batch of
each step is a pure function of (seed, step) (``BatchOrder``), so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from lamra.atomic_io import atomic_write_text
from lamra.retriever import autocast_for
from lamra.train.train_state import latest_checkpoint, load_checkpoint, save_checkpoint
from lamra.train.distributed import all_reduce_mean, is_distributed, is_main_process, rank, world_size
from lamra.train.recipe import Recipe, save_recipe
from lamra.train.schedule import (
    BatchOrder, cosine_lr_factor, cosine_with_warmup, count_training_steps, warmup_steps_for,
)

StepFn = Callable[[list[int], int], float | tuple[float, dict[str, float]]]
LOSS_LOG = "losses.jsonl"
BUDGET_PROBE_STEPS = 10  # steps timed before a `max_minutes` run fixes its length
HARDWARE_LOG = "hardware.json"  # where each session of a run trained (the package copies it)


def hardware_record(device: torch.device) -> dict:
    if device.type == "cuda":
        name = f"{world_size()}x {torch.cuda.get_device_name(device)}"
    else:
        name = f"CPU, {world_size()} process(es) x {torch.get_num_threads()} threads"
    return {"device": name, "torch": torch.__version__}


def record_hardware(run_dir: Path, device: torch.device) -> None:
    """Append this session's hardware to the run's list (a resumed run may move machines)."""
    path = run_dir / HARDWARE_LOG
    records = json.loads(path.read_text()) if path.is_file() else []
    if hardware_record(device) not in records:
        atomic_write_text(path, json.dumps([*records, hardware_record(device)], indent=2) + "\n")


@dataclass
class TrainResult:
    run_dir: Path
    total_steps: int
    start_step: int
    losses: list[float] = field(default_factory=list)  # the steps run in this call
    seconds_per_step: float | None = None

    @property
    def resumed(self) -> bool:
        return self.start_step > 0


def autocast(recipe: Recipe, device: torch.device):
    """bf16 autocast when the recipe asks for it (CPU included), else fp32."""
    return autocast_for(device, "bf16" if recipe.bf16 else "fp32")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_loss(step_output) -> tuple[float, dict[str, float]]:
    """A step's loss, and its named parts when the step returns ``(loss, {"name": value, ...})``
    (logged beside the loss; a joint stage reports each job's share this way)."""
    if isinstance(step_output, tuple):
        loss, parts = step_output
        return float(loss), {name: float(value) for name, value in parts.items()}
    return float(step_output), {}


def sync_gradients(params: list[torch.nn.Parameter], reduction: str) -> None:
    """All-reduce the gradients of ``params`` in one flat buffer ("mean" or "sum" over ranks)."""
    if not is_distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    if reduction == "mean":
        flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


class ResumeError(ValueError):
    """The run directory's latest checkpoint belongs to a run this recipe is not."""


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        model: torch.nn.Module,
        num_examples: int,
        step_fn: StepFn,
        grad_reduction: str = "mean",
        desc: str | None = None,
        order: BatchOrder | None = None,
    ) -> None:
        if grad_reduction not in ("mean", "sum"):
            raise ValueError(f"grad_reduction must be 'mean' or 'sum', got {grad_reduction!r}")
        self.recipe = recipe
        self.model = model
        self.step_fn = step_fn
        self.grad_reduction = grad_reduction
        self.desc = desc or recipe.stage
        self.run_dir = recipe.run_dir
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: no parameter requires a gradient")
        self.order = order or BatchOrder(num_examples, recipe.batch_size, recipe.seed, world_size())
        self.total_steps = count_training_steps(
            self.order.steps_per_epoch * recipe.batch_size, recipe.batch_size, recipe.epochs, recipe.max_steps
        )
        self.optimizer = torch.optim.AdamW(self.params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, recipe.warmup_ratio)
        self.warmup_steps = warmup_steps_for(self.total_steps, recipe.warmup_ratio)

    def train(self, stop_after: int | None = None, show_progress: bool = True) -> TrainResult:
        """Train to the end (or stop after step ``stop_after``, as a kill would); resumes from the
        latest checkpoint of the run directory when there is one."""
        recipe = self.recipe
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            save_recipe(recipe, self.run_dir / "recipe.yaml")
            record_hardware(self.run_dir, self.params[0].device)
        start = 0
        latest = latest_checkpoint(self.run_dir)
        if latest is not None:
            state = load_checkpoint(latest, self.model, self.optimizer, self.scheduler)
            recorded = state.extra.get("total_steps")
            shortened = recipe.max_minutes and (recorded or 0) <= self.total_steps
            # max_steps set to the checkpoint's own step ends the run there: no step runs under another schedule
            ends_here = self.total_steps == state.step
            if recorded not in (None, self.total_steps) and not shortened and not ends_here:
                raise ResumeError(
                    f"{latest} belongs to a run of {recorded} steps, this recipe has {self.total_steps}: use a "
                    f"fresh output_dir, or set max_steps={state.step} to end the run at this checkpoint"
                )
            start = state.step
            if recipe.max_minutes and recorded is not None and not ends_here:
                self._set_total_steps(recorded)  # the length the budget chose
        self._truncate_log(start)
        result = TrainResult(self.run_dir, self.total_steps, start)
        self.model.train()
        bar = tqdm(
            total=self.total_steps, initial=start, desc=f"{recipe.name or self.desc}",
            unit="step", disable=not (show_progress and is_main_process()),
        )
        times = []
        train_began = time.perf_counter()
        step = start
        while step < (self.total_steps if stop_after is None else min(stop_after, self.total_steps)):
            began = time.perf_counter()
            indices = self.order.rank_indices(step, rank())
            self.optimizer.zero_grad(set_to_none=True)
            loss, parts = split_loss(self.step_fn(indices, self.order.epoch_of(step)))
            if not math.isfinite(loss):  # stop before the optimizer writes NaN into every weight
                raise FloatingPointError(
                    f"{recipe.name or self.desc}: the loss of step {step + 1} is {loss}; the weights are "
                    f"those after step {step} (checkpoints in {self.run_dir})"
                )
            sync_gradients(self.params, self.grad_reduction)
            if recipe.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params, recipe.max_grad_norm)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            if self.grad_reduction == "sum":  # each rank holds its share of the global mean
                loss = all_reduce_mean(loss) * world_size()
            elapsed = time.perf_counter() - began
            times.append(elapsed)
            speed = recipe.batch_size / elapsed
            result.losses.append(loss)
            self._log({"step": step + 1, "loss": loss, **parts, "lr": lr, "examples_per_s": round(speed, 3),
                       "seconds": round(elapsed, 3)})
            bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{speed:.1f}")
            bar.update(1)
            done = step + 1
            if recipe.max_minutes and start == 0 and len(times) == BUDGET_PROBE_STEPS:
                self._fit_time_budget(done, times, time.perf_counter() - train_began)
                bar.total = self.total_steps
            if done % recipe.save_every == 0 or done == self.total_steps:
                save_checkpoint(self.run_dir, done, self.model, self.optimizer, self.scheduler,
                                data_state={"seed": recipe.seed, "batch_size": recipe.batch_size},
                                extra={"total_steps": self.total_steps, "stage": recipe.stage},
                                keep_last=recipe.keep_checkpoints)
            step = done
        bar.close()
        result.total_steps = self.total_steps
        self.model.eval()
        if times:
            result.seconds_per_step = sum(times) / len(times)
        return result

    def _fit_time_budget(self, done: int, times: list[float], elapsed: float) -> None:
        """`max_minutes`: from the timed first steps, shorten the run so it ends inside the budget.
        The warmup keeps its length (a redrawn one would jump the lr mid-warmup) and the cosine is
        redrawn to end at the new length; checkpoints record it, so a resume keeps it."""
        typical = sorted(times[2:])[len(times[2:]) // 2]  # median, past the first (warm-up) steps
        typical, elapsed = all_reduce_mean(typical), all_reduce_mean(elapsed)  # one length on every rank
        remaining = self.recipe.max_minutes * 60 - elapsed
        fitted = max(done + 1, done + int(remaining / typical))
        if fitted < self.total_steps:
            self._set_total_steps(fitted)

    def _set_total_steps(self, total: int) -> None:
        warmup = self.warmup_steps if self.warmup_steps < total else warmup_steps_for(total, self.recipe.warmup_ratio)
        self.total_steps = total
        self.scheduler.lr_lambdas[0] = lambda step: cosine_lr_factor(step, total, warmup)

    @property
    def finished(self) -> bool:
        latest = latest_checkpoint(self.run_dir)
        return latest is not None and int(latest.name.split("-")[1]) >= self.total_steps

    def _log(self, record: dict) -> None:
        if not is_main_process() or not self.recipe.log_every or record["step"] % self.recipe.log_every:
            return
        with open(self.run_dir / LOSS_LOG, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past the checkpoint we resume from (they are about to be redone)."""
        path = self.run_dir / LOSS_LOG
        if not is_main_process() or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_loss_log(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / LOSS_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

