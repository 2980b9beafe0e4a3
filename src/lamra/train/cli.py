"""``lamra train``: one sub-command per stage, plus ``mine`` and ``merge``.

    lamra train stage0 --recipe compact-stage0           # compact only: align the projector
    lamra train stage1 --recipe compact-stage1
    lamra train merge  --recipe compact-stage1           # runs/compact-stage1/merged
    lamra train stage2 --recipe compact-stage2
    lamra train mine   --recipe compact-rank             # Ret's top-K -> the recipe's rerank_data
    lamra train rank   --recipe compact-rank

``--recipe`` takes a YAML file or the name of a shipped recipe (recipes/); ``--set key=value``
overrides any recipe key. Runs resume from their last checkpoint; multi-process:
``torchrun --nproc_per_node 2 -m lamra.train.cli stage1 --recipe ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

train_app = typer.Typer(help="Train LamRA-Ret (stages 0/1/2) and LamRA-Rank; mine; merge.", no_args_is_help=True,
                        rich_markup_mode=None)  # plain help, as the main app's

RecipeOption = Annotated[str, typer.Option("--recipe", "-r", help="Recipe YAML file or shipped recipe name.")]
SetOption = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a recipe key: --set max_steps=10 (repeatable).")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _recipe(recipe: str, overrides: list[str] | None, stage: str | None):
    from lamra.train.recipe import RecipeError, load_recipe, parse_override

    try:
        values = dict(parse_override(text) for text in overrides or [])
        loaded = load_recipe(recipe, values)
    except RecipeError as error:
        raise typer.BadParameter(str(error), param_hint="--recipe") from None
    if stage is not None and loaded.stage != stage:
        raise typer.BadParameter(f"{recipe} is a {loaded.stage} recipe, not {stage}", param_hint="--recipe")
    return loaded


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _train(stage: str, recipe: str, overrides: list[str] | None, quiet: bool) -> None:
    from lamra.data.mbeir import MBEIRFormatError
    from lamra.items import InputError
    from lamra.train.distributed import is_main_process
    from lamra.train.stages import run_stage
    from lamra.train.stages.models import StageSetupError
    from lamra.train.trainer import ResumeError

    loaded = _recipe(recipe, overrides, stage)
    try:
        result = run_stage(loaded, show_progress=not quiet)
    except (StageSetupError, MBEIRFormatError, InputError, FileNotFoundError, FloatingPointError,
            ResumeError) as error:
        _fail(error)
        return
    if is_main_process():
        losses = result.losses
        summary = f"{loaded.name}: {len(losses)} steps run"
        if losses:
            summary += f", loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        if result.train.seconds_per_step:
            summary += f", {result.train.seconds_per_step:.2f} s/step"
        typer.echo(f"{summary}; result in {result.final_dir}")


@train_app.command()
def stage0(recipe: RecipeOption, set: SetOption = None, quiet: QuietOption = False) -> None:
    """Compact LMM: align the new projector (next-token loss on training-image captions)."""
    _train("stage0", recipe, set, quiet)


@train_app.command()
def stage1(recipe: RecipeOption, set: SetOption = None, quiet: QuietOption = False) -> None:
    """LamRA-Ret stage 1: InfoNCE on language-only pairs."""
    _train("stage1", recipe, set, quiet)


@train_app.command()
def stage2(recipe: RecipeOption, set: SetOption = None, quiet: QuietOption = False) -> None:
    """LamRA-Ret stage 2: multimodal instruction tuning on M-BEIR-format data."""
    _train("stage2", recipe, set, quiet)


@train_app.command()
def rank(recipe: RecipeOption, set: SetOption = None, quiet: QuietOption = False) -> None:
    """LamRA-Rank: next-token loss on mined pointwise and listwise samples."""
    _train("rank", recipe, set, quiet)


@train_app.command()
def merge(recipe: RecipeOption, set: SetOption = None) -> None:
    """Fold a finished run's adapter in: writes {run_dir}/merged (the next stage's init_from)."""
    from lamra.train.merge import merge as merge_run
    from lamra.train.stages.models import StageSetupError

    loaded = _recipe(recipe, set, None)
    try:
        typer.echo(f"merged: {merge_run(loaded)}")
    except StageSetupError as error:
        _fail(error)


@train_app.command()
def mine(
    recipe: RecipeOption,
    retriever: Annotated[
        Optional[Path],
        typer.Option(help="Trained LamRA-Ret (default: merged/ or final/ beside the recipe's rerank_data)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output JSONL (default: the recipe's rerank_data).")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Candidates per query (default: mining_top_k).")] = None,
    batch_size: int = 16,
    pool_index: Annotated[
        Optional[Path],
        typer.Option(help="A `lamra index` directory of the same pool built with this retriever: reused, not re-encoded."),
    ] = None,
    set: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Retrieve the top-K of the training pool for every training query (resumable)."""
    from lamra.train.mining import mine as run_mining
    from lamra.train.stages.mbeir_data import MBEIRTrainData
    from lamra.train.stages.models import StageSetupError, load_retriever, retriever_channels

    loaded = _recipe(recipe, set, None)
    target = out or (Path(loaded.rerank_data) if loaded.rerank_data else None)
    if target is None:
        raise typer.BadParameter("give --out or set rerank_data in the recipe", param_hint="--out")
    source = retriever or default_retriever(target)
    try:
        data = MBEIRTrainData.from_recipe(loaded)
        backbone = load_retriever(source, base=loaded.model)
        path = run_mining(backbone, data, target, top_k=top_k or loaded.mining_top_k, batch_size=batch_size,
                          precision="bf16" if loaded.bf16 else "fp32", show_progress=not quiet,
                          pool_size=loaded.mining_pool_size, pool_index=pool_index, local=loaded.mining_local,
                          channels=retriever_channels(source))
    except (StageSetupError, FileNotFoundError, ValueError) as error:
        _fail(error)
        return
    typer.echo(f"mined: {path}")


def default_retriever(mined_file: Path) -> Path:
    """``merged/`` (else ``final/``) of the run directory that holds the mined file."""
    run_dir = Path(mined_file).parent
    return run_dir / "merged" if (run_dir / "merged").is_dir() else run_dir / "final"


if __name__ == "__main__":
    train_app()
