"""Loading the model a stage starts from, on either backbone.

- compact: ``init_from`` a light checkpoint (``lamra.json``: projector + retrieval adapters folded
  in order), else the packaged parts with a fresh projector (``num_visual_tokens`` = grid**2).
- Qwen-VL: ``init_from`` (merged full weights, or an adapter dir folded into its base) else
  ``model`` (a hub id or a local dir).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from lamra.backbones.base import Backbone
from lamra.light_checkpoint import CHANNELS, CONFIG_NAME, load_channel, read_light_config
from lamra.train.recipe import Recipe

ADAPTER_CONFIG = "adapter_config.json"


class StageSetupError(ValueError):
    """A recipe whose model cannot be loaded as asked; the message says which key to fix."""


def image_grid_for(recipe: Recipe) -> int:
    tokens = recipe.num_visual_tokens or 9
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise StageSetupError(f"num_visual_tokens must be a square (4, 9, 16, ...), got {tokens}")
    return grid


def is_light(path: str | os.PathLike | None) -> bool:
    return path is not None and (Path(path) / CONFIG_NAME).is_file()


def is_adapter_dir(path: str | os.PathLike | None) -> bool:
    return path is not None and (Path(path) / ADAPTER_CONFIG).is_file()


def load_training_backbone(recipe: Recipe, role: str = "retrieval") -> Backbone:
    """The backbone a stage trains (fp32 weights on CPU; bf16 comes from autocast)."""
    if recipe.backbone == "compact":
        return _load_compact(recipe, role)
    if recipe.backbone in ("qwen2-vl", "qwen2.5-vl"):
        return _load_qwen(recipe)
    raise StageSetupError(f"backbone must be compact, qwen2-vl or qwen2.5-vl, got {recipe.backbone!r}")


def _load_compact(recipe: Recipe, role: str) -> Backbone:
    from lamra.backbones.compact import CompactBackbone
    from lamra.light_checkpoint import load_light_compact

    grid = image_grid_for(recipe)
    source = recipe.init_from or recipe.model
    if source is None:
        torch.manual_seed(recipe.seed)
        return CompactBackbone.from_parts(image_grid=grid, seed=recipe.seed,
                                          global_image_token=recipe.global_image_token)
    if recipe.continue_adapter and not is_light(source):
        raise StageSetupError(f"continue_adapter needs init_from to be a light checkpoint, got {source!r}")
    if is_light(source):
        config = read_light_config(Path(source))
        if recipe.num_visual_tokens is not None and config["image_grid"] != grid:
            raise StageSetupError(
                f"{source} has {config['image_grid'] ** 2} visual tokens but the recipe asks for "
                f"num_visual_tokens {grid * grid}"
            )
        if role == "rank" and config.get("retrieval_adapters") and not recipe.rank_from_retriever:
            raise StageSetupError(
                f"rank trains from the base model (stage 0), but {source} carries retrieval adapters "
                "(set rank_from_retriever: true to train on top of that LamRA-Ret)"
            )
        if recipe.rank_from_retriever and not config.get("retrieval_adapters"):
            raise StageSetupError(f"rank_from_retriever: {source} holds no LamRA-Ret (no retrieval adapters)")
        if recipe.continue_adapter and not config.get("retrieval_adapters"):
            raise StageSetupError(f"continue_adapter: {source} holds no retrieval adapter to continue")
        return load_light_compact(source, role="retrieval", global_image_token=recipe.global_image_token,
                                  fold_last=not recipe.continue_adapter)
    if not Path(source).is_dir():
        raise StageSetupError(
            f"init_from/model {source!r} not found: run the previous stage first (or fix the recipe)"
        )
    return CompactBackbone.from_pretrained(source)


def continued_adapter(recipe: Recipe) -> str:
    """``continue_adapter``: the folder (under init_from) of the retrieval adapter the run trains further."""
    return read_light_config(Path(recipe.init_from))["retrieval_adapters"][-1]


def _load_qwen(recipe: Recipe) -> Backbone:
    source = recipe.init_from or recipe.model
    if source is None or source == "tiny":
        raise StageSetupError(
            f"recipe {recipe.name!r}: set `model` to a Qwen-VL checkpoint (a hub id or a local dir)"
        )
    if recipe.init_from and not Path(recipe.init_from).exists():
        raise StageSetupError(f"init_from {recipe.init_from!r} not found: run the previous stage (and merge)")
    backbone = load_qwen_any(source)
    if recipe.image_max_pixels or recipe.image_min_pixels:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from lamra.backbones.qwen_vl import MAX_PIXELS, MIN_PIXELS

        backbone.image_processor = Qwen2VLImageProcessorPil(
            min_pixels=recipe.image_min_pixels or MIN_PIXELS, max_pixels=recipe.image_max_pixels or MAX_PIXELS
        )
    return backbone


def load_qwen_any(source: str | os.PathLike, base: str | None = None) -> Backbone:
    """A full Qwen-VL checkpoint, or an adapter dir folded into its base (merge_and_unload)."""
    from lamra.backbones.qwen_vl import QwenVLBackbone

    if is_adapter_dir(source):
        base = base or json.loads((Path(source) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base:
            raise StageSetupError(f"{source}: adapter without base_model_name_or_path; pass the base model")
        backbone = QwenVLBackbone.from_pretrained(base, adapter=source)
        backbone.model = backbone.model.merge_and_unload()
        return backbone
    return QwenVLBackbone.from_pretrained(source)


def retriever_channels(path: str | os.PathLike) -> dict:
    """The score channels of a light compact LamRA-Ret package (``appearance``, ``colour``: keyword
    arguments of ``Retriever``); none for other checkpoints."""
    return {kind: load_channel(path, kind) for kind in CHANNELS} if is_light(Path(path)) else {}


def load_retriever(path: str | os.PathLike, base: str | None = None) -> Backbone:
    """A trained LamRA-Ret for mining: a light compact dir, a Qwen adapter dir, or full weights."""
    path = Path(path)
    if is_light(path):
        from lamra.light_checkpoint import load_light_compact

        return load_light_compact(path, role="retrieval")
    if not path.exists():
        raise StageSetupError(f"retriever {str(path)!r} not found: train (and merge) stage 2 first")
    from lamra.model import load_backbone

    if is_adapter_dir(path):
        return load_qwen_any(path, base)
    return load_backbone(path)
