"""Training machinery shared by every stage (model-independent).

losses        info_nce, next_token_loss
distributed   rank facts, gather_with_grad, contrastive_loss_distributed
gradcache     GradCache: big contrastive batches with exact gradients
schedule      cosine_with_warmup, count_training_steps, BatchOrder
train_state   save_checkpoint / load_checkpoint / latest_checkpoint (SIGKILL-safe)
recipe        Recipe, load_recipe (YAML files under recipes/)
"""

from lamra.train.train_state import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state_dict,
)
from lamra.train.distributed import (
    contrastive_loss_distributed,
    gather_with_grad,
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    world_size,
)
from lamra.train.gradcache import GradCache
from lamra.train.losses import count_target_tokens, info_nce, next_token_loss
from lamra.train.recipe import Recipe, RecipeError, load_recipe, save_recipe
from lamra.train.schedule import BatchOrder, cosine_with_warmup, count_training_steps

__all__ = [
    "BatchOrder",
    "GradCache",
    "Recipe",
    "RecipeError",
    "TrainState",
    "contrastive_loss_distributed",
    "count_target_tokens",
    "cosine_with_warmup",
    "count_training_steps",
    "gather_with_grad",
    "info_nce",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "load_recipe",
    "next_token_loss",
    "rank",
    "save_checkpoint",
    "save_recipe",
    "trainable_state_dict",
    "world_size",
]
