"""The compact LMM behind the backbone interface, and how it is assembled from packaged parts."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoTokenizer, LlamaForCausalLM

from lamra.assets import efficientnet_lite0_weights, smollm2_dir
from lamra.backbones.base import Backbone, Messages, pad_sequences, render_chatml
from lamra.backbones.compact_modeling import (
    CompactLMMConfig,
    CompactLMMForConditionalGeneration,
    preprocess_images,
)
from lamra.prompts import EMB_TOKEN

IMAGE_TOKEN = "<image>"

AutoConfig.register(CompactLMMConfig.model_type, CompactLMMConfig, exist_ok=True)
AutoModel.register(CompactLMMConfig, CompactLMMForConditionalGeneration, exist_ok=True)


class VisionFeatureCache:
    """Frozen-tower features keyed by image content, so each image is run through EfficientNet once."""

    def __init__(self, max_items: int = 50_000):
        self.max_items = max_items
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(image: Image.Image) -> str:
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(f"{image.mode}{image.size}".encode())
        return digest.hexdigest()

    def get_many(self, model: CompactLMMForConditionalGeneration, images: list[Image.Image]) -> torch.Tensor:
        keys = [self.key(image) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            pixels = preprocess_images([images[i] for i in missing]).to(model.device)
            features = model.image_features(pixels).cpu()
            for i, feature in zip(missing, features, strict=True):
                self._store[keys[i]] = feature
        for k in keys:
            self._store.move_to_end(k)
        batch = torch.stack([self._store[k] for k in keys])
        while len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return batch

    def __len__(self) -> int:
        return len(self._store)


def build_compact_from_parts(image_grid: int = 3, seed: int = 0):
    """A fresh compact LMM: pretrained SmolLM2 + pretrained EfficientNet-Lite0 + a new projector."""
    lm_dir = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, EMB_TOKEN]})
    language_model = LlamaForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = CompactLMMConfig(
        text_config=language_model.config,
        image_grid=image_grid,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(seed)
    model = CompactLMMForConditionalGeneration(config)
    model.language_model.load_state_dict(language_model.state_dict())
    vision_state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model.vision_tower.load_state_dict(vision_state)
    model.tie_weights()
    return model.eval(), tokenizer


class CompactBackbone(Backbone):
    """SmolLM2 + EfficientNet-Lite0 + MLP projector. Uses ChatML without a system turn (shorter
    sequences on CPU; the model is trained on exactly this format)."""

    kind = "compact"

    def __init__(self, model, tokenizer, feature_cache: VisionFeatureCache | None = None):
        super().__init__(model, tokenizer)
        config = self.hf_model.config
        self.image_placeholder = IMAGE_TOKEN * config.num_image_tokens
        self.feature_cache = feature_cache if feature_cache is not None else VisionFeatureCache()

    @classmethod
    def from_parts(cls, image_grid: int = 3, seed: int = 0) -> CompactBackbone:
        return cls(*build_compact_from_parts(image_grid, seed))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        adapter: str | os.PathLike | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> CompactBackbone:
        model = CompactLMMForConditionalGeneration.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        model.to(device).eval()
        return cls(model, tokenizer)

    @property
    def lora_target_modules(self) -> str:
        return r".*language_model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj"

    def build_inputs(
        self,
        conversations: list[Messages],
        add_generation_prompt: bool = False,
        assistant_prefix: str = "",
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor]:
        sequences, images = [], []
        for messages in conversations:
            rendered = render_chatml(
                messages, self.image_placeholder, None, add_generation_prompt, assistant_prefix
            )
            sequences.append(self.tokenize(rendered.text))
            images += rendered.images
        input_ids, attention_mask = pad_sequences(sequences, self.tokenizer.pad_token_id, padding_side)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if images:
            inputs["image_features"] = self.feature_cache.get_many(self.hf_model, images)
        return inputs

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.hf_model.last_hidden_state(**inputs)
