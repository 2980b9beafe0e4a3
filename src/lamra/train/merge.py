"""A stage's result on disk, and ``lamra train merge``.

``final/`` (written when a stage finishes):
  compact   the light format: ``projector.safetensors``, the adapters the run started from (copied
            from ``init_from``) and this run's adapter under ``adapters/{adapter_name or stage}`` (with
            ``continue_adapter``: init_from's last adapter, trained further, in its place), listed in
            ``lamra.json`` (``retrieval_adapters`` in folding order; the rank stage's adapter as
            ``rank_adapter``). Stage 0 writes the projector only. A reranker trained on top of a
            LamRA-Ret (``rank_from_retriever``) writes a whole package: the retriever's adapters and
            projector copied unchanged (same file names, so the same retrieval digest), its own
            projector, and ``roles.rank.adapters`` = the retrieval adapters, then its own.
  Qwen-VL   the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``), tokenizer beside;
            its ``base_model_name_or_path`` is the weights the run started from.

``merged/`` (``lamra train merge``): Qwen-VL -> the adapter folded into its base
(``merge_and_unload``), full weights + tokenizer; compact -> the light format again (the adapters
stay separate files and are folded in order at load time), so the next stage can start from it.
Both are written to a temp folder and renamed into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lamra.atomic_io import atomic_directory
from lamra.backbones.base import Backbone
from lamra.light_checkpoint import (
    PROJECTOR_FILE,
    RANK_PROJECTOR_FILE,
    read_light_config,
    role_vision,
    save_projector,
    write_light_config,
)
from lamra.train.recipe import Recipe
from lamra.train.stages.models import StageSetupError, continued_adapter, is_light, load_qwen_any

FINAL, MERGED = "final", "merged"


def final_dir(recipe: Recipe) -> Path:
    return recipe.run_dir / FINAL


def merged_dir(recipe: Recipe) -> Path:
    return recipe.run_dir / MERGED


def write_final(recipe: Recipe, backbone: Backbone) -> Path:
    target = final_dir(recipe)
    with atomic_directory(target) as temp:
        if recipe.backbone == "compact":
            _write_light(recipe, backbone, temp)
        else:
            backbone.model.save_pretrained(temp)
            backbone.tokenizer.save_pretrained(temp)
    return target


def _write_light(recipe: Recipe, backbone: Backbone, out: Path) -> None:
    adapters: list[str] = []
    roles = None
    projector = PROJECTOR_FILE
    continued = None
    if is_light(recipe.init_from):
        source = Path(recipe.init_from)
        source_config = read_light_config(source)
        continued = continued_adapter(recipe) if recipe.continue_adapter else None
        for name in source_config.get("retrieval_adapters", []):
            if name != continued:  # a continued adapter is written below, trained
                shutil.copytree(source / name, out / name)
                adapters.append(name)
        if recipe.rank_from_retriever:  # the retrieval role copied under its own file names: same digest
            retrieval_vision = role_vision(source_config, "retrieval")
            shutil.copy(source / retrieval_vision["projector"], out / retrieval_vision["projector"])
            roles = {"retrieval": retrieval_vision}
            if retrieval_vision["projector"] == PROJECTOR_FILE:
                projector = RANK_PROJECTOR_FILE
    save_projector(backbone, out / projector)
    rank_adapter = None
    if recipe.stage != "stage0":
        name = f"adapters/{recipe.adapter_name or recipe.stage}"
        if recipe.continue_adapter and not recipe.adapter_name:
            name = continued  # same place in the chain, same name
        if name in adapters:
            raise StageSetupError(f"{recipe.init_from} already holds {name}: start {recipe.stage} from an "
                                  "earlier stage, or give this run its own `adapter_name`")
        backbone.model.save_pretrained(out / name)
        if recipe.stage == "rank":
            rank_adapter = name
        else:
            adapters.append(name)
        if recipe.joint_rank_weight:  # one model for both jobs: the rank role is the retrieval chain
            rank_adapter = name
            roles = {"rank": {"adapters": list(adapters)}}
    config = backbone.hf_model.config
    if roles is not None and recipe.rank_from_retriever:
        roles["rank"] = {"projector": projector, "global_image_token": config.global_image_token,
                         "adapters": [*adapters, rank_adapter]}
    write_light_config(out, config.image_grid, adapters, rank_adapter, config.global_image_token, roles)


def merge(recipe: Recipe) -> Path:
    """Fold the run's final adapter into its starting weights (see the module doc)."""
    source = final_dir(recipe)
    if not source.is_dir():
        raise StageSetupError(f"{source} not found: train {recipe.name} to the end first")
    target = merged_dir(recipe)
    with atomic_directory(target) as temp:
        if recipe.backbone == "compact":
            shutil.copytree(source, temp, dirs_exist_ok=True)
        else:
            backbone = load_qwen_any(source, base=recipe.init_from or recipe.model)
            backbone.hf_model.save_pretrained(temp)
            backbone.tokenizer.save_pretrained(temp)
    return target
