"""Stage 2's trunk distillation: the frozen trunk's features as teacher, only on batches whose queries
and candidates all hold an image, and nothing changes for the others."""

from __future__ import annotations

import pytest
import torch

from lamra.backbones.compact_modeling import preprocess_images
from lamra.train.recipe import Recipe, RecipeError, recipe_from_dict
from lamra.train.retrieval import contrastive_step_fn, trunk_features


@pytest.fixture(scope="module")
def backbone():
    from lamra.backbones.compact import CompactBackbone

    return CompactBackbone.from_parts(seed=0, global_image_token=True)


def test_trunk_features_are_the_mean_pooled_map_of_each_items_first_image(backbone, images):
    photo, sticker = images
    recipe = Recipe(stage="stage2", bf16=False, global_image_token=True)
    features = trunk_features(backbone, recipe, [[photo, "a photo"], [sticker.convert("RGB")], ["text", photo]])
    model = backbone.hf_model
    with torch.no_grad():
        maps = model.vision_tower.extract_features(preprocess_images([photo, sticker.convert("RGB"), photo]))
    assert features.shape == (3, 1280)
    torch.testing.assert_close(features, maps.mean(dim=(2, 3)))
    assert trunk_features(backbone, recipe, [[photo], ["no image here"]]) is None


def test_distillation_adds_to_the_loss_of_image_batches_only(backbone, images):
    photo, sticker = images
    rotated = photo.rotate(90)
    image_batch = [([photo, "find it"], [sticker], []), ([sticker], [rotated], []), ([rotated], [photo], [])]
    text_batch = [(["a red square"], ["red"], []), (["a photo"], ["noise"], []), (["turned"], ["rotated"], [])]
    losses = {}
    for weight in (0.0, 1.0):
        recipe = Recipe(stage="stage2", bf16=False, lora_dropout=0.0, chunk_size=8, symmetric_loss=True,
                        global_image_token=True,
                        trunk_distillation=weight, trunk_distillation_temperature=0.02)
        for name, batch in (("image", image_batch), ("text", text_batch)):
            step = contrastive_step_fn(backbone, recipe, lambda index, epoch, batch=batch: batch[index])
            losses[name, weight] = step([0, 1, 2], 0)
    backbone.model.zero_grad(set_to_none=True)
    assert losses["image", 1.0] > losses["image", 0.0] + 1e-3
    assert losses["text", 1.0] == pytest.approx(losses["text", 0.0], abs=1e-6)


def test_recipes_refuse_distillation_outside_the_compact_stage2():
    with pytest.raises(RecipeError, match="trunk_distillation"):
        recipe_from_dict({"stage": "stage1", "trunk_distillation": 0.5})
    with pytest.raises(RecipeError, match="trunk_distillation"):
        recipe_from_dict({"stage": "stage2", "trunk_distillation": -1.0})
    with pytest.raises(RecipeError, match="global_image_token"):
        recipe_from_dict({"stage": "stage2", "trunk_distillation": 0.5})
    assert recipe_from_dict({"stage": "stage2", "trunk_distillation": 0.5, "global_image_token": True}).trunk_distillation == 0.5
