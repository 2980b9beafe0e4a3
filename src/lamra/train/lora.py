"""LoRA on the language model's Linear layers, and the freezing rules of each stage.

Stages 1, 2 and rank train LoRA adapters on every Linear of the language model (``q,k,v,o`` and the
MLP ``gate,up,down`` projections): never the vision tower, never ``lm_head``, and never the compact
model's projector once it is aligned. Stage 0 (compact only) trains the projector alone.
"""

from __future__ import annotations

import torch

from lamra.backbones.base import Backbone, quiet_peft

# Module-name fragments LoRA must never touch (vision towers, Qwen's merger, the projector, the head).
FORBIDDEN_FRAGMENTS = ("vision_tower", "visual", "multi_modal_projector", "merger", "lm_head")


class LoraTargetError(RuntimeError):
    """LoRA landed somewhere it must not (or nowhere at all)."""


def add_lora(backbone: Backbone, r: int, alpha: int, dropout: float) -> list[str]:
    """Wrap ``backbone.model`` in a peft model with LoRA on ``backbone.lora_target_modules``.

    Everything else is frozen. Returns the names of the adapted modules (checked: all in the
    language model, none in a forbidden place).
    """
    from peft import LoraConfig, get_peft_model

    if hasattr(backbone.model, "peft_config"):
        raise LoraTargetError("the backbone already carries an adapter: merge it first (lamra train merge)")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=backbone.lora_target_modules,
        bias="none",
    )
    with quiet_peft():
        backbone.model = get_peft_model(backbone.model, config)
    return _checked_lora(backbone)


def continue_lora(backbone: Backbone, adapter_dir) -> list[str]:
    """Wrap ``backbone.model`` in the saved peft adapter ``adapter_dir``, trainable, with its own rank,
    alpha and targets (``continue_adapter``). Everything else is frozen, as with ``add_lora``."""
    from peft import PeftModel

    if hasattr(backbone.model, "peft_config"):
        raise LoraTargetError("the backbone already carries an adapter: merge it first (lamra train merge)")
    with quiet_peft():
        backbone.model = PeftModel.from_pretrained(backbone.model, str(adapter_dir), is_trainable=True)
    return _checked_lora(backbone)


def _checked_lora(backbone: Backbone) -> list[str]:
    names = lora_module_names(backbone.model)
    check_lora_targets(names)
    for name, param in backbone.model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            raise LoraTargetError(f"{name} is trainable but is not a LoRA weight")
    return names


def lora_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


def check_lora_targets(names: list[str]) -> None:
    if not names:
        raise LoraTargetError("LoRA matched no module: check the backbone's lora_target_modules")
    bad = [n for n in names if any(f in n for f in FORBIDDEN_FRAGMENTS) or "language_model" not in n]
    if bad:
        raise LoraTargetError(f"LoRA must stay in the language model's Linears, but hit {bad[:3]}")


def train_projector_only(backbone: Backbone) -> list[str]:
    """Stage 0: freeze everything but the compact model's multi-modal projector."""
    model = backbone.hf_model
    if not hasattr(model, "multi_modal_projector"):
        raise ValueError("stage 0 (projector alignment) needs the compact backbone")
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
