"""The compact LMM as a Hugging Face model: config + safetensors, peft- and dtype-friendly.

LLaVA-style: a frozen EfficientNet-Lite0 turns a 224x224 image into a 1280x7x7 feature map, which is
average-pooled to ``image_grid x image_grid`` visual tokens (plus, with ``global_image_token``, one
token of the whole map's mean: the feature the trunk's own image-to-image baseline uses); a 2-layer
MLP projects them into the language model's embedding space, where they replace the ``<image>``
placeholder tokens. The
language model is SmolLM2-135M-Instruct (a Llama).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel

IMAGE_SIZE = 224
VISION_FEATURE_DIM = 1280  # EfficientNet-Lite0's last feature map


class CompactLMMConfig(PretrainedConfig):
    model_type = "lamra_compact"
    sub_configs = {"text_config": LlamaConfig}

    def __init__(
        self,
        text_config: dict | LlamaConfig | None = None,
        image_grid: int = 3,
        projector_hidden_size: int | None = None,
        image_token_id: int | None = None,
        vision_model_name: str = "efficientnet-lite0",
        global_image_token: bool = False,
        **kwargs,
    ):
        if isinstance(text_config, dict):
            text_config = LlamaConfig(**text_config)
        self.text_config = text_config if text_config is not None else LlamaConfig()
        self.image_grid = image_grid
        self.projector_hidden_size = projector_hidden_size or self.text_config.hidden_size
        self.image_token_id = image_token_id
        self.vision_model_name = vision_model_name
        self.global_image_token = global_image_token
        kwargs.setdefault("tie_word_embeddings", self.text_config.tie_word_embeddings)
        super().__init__(**kwargs)

    @property
    def num_image_tokens(self) -> int:
        return self.image_grid * self.image_grid + int(self.global_image_token)

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size


def preprocess_images(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images -> (N, 3, 224, 224) in [-1, 1], EfficientNet-Lite's normalisation."""
    arrays = [
        np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), np.float32)
        for image in images
    ]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    return (pixels - 0.5) / 0.5


class CompactLMMForConditionalGeneration(PreTrainedModel):
    config_class = CompactLMMConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _tied_weights_keys = {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"}

    def __init__(self, config: CompactLMMConfig):
        super().__init__(config)
        from efficientnet_lite_pytorch import EfficientNet

        # Only the convolutional trunk is used; its classifier head is never called.
        self.vision_tower = EfficientNet.from_name(config.vision_model_name)
        self.vision_tower.requires_grad_(False)
        self.multi_modal_projector = nn.Sequential(
            nn.Linear(VISION_FEATURE_DIM, config.projector_hidden_size),
            nn.GELU(),
            nn.Linear(config.projector_hidden_size, config.hidden_size),
        )
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()
        # Set by ``lamra.backbones.openvino_engine.use_openvino``: runs the trunk and the decoder at
        # inference (gradients off); None runs everything in torch.
        self.engine = None

    # --- the pieces transformers and peft look for ------------------------------------------------
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # --- vision ----------------------------------------------------------------------------------
    @torch.no_grad()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen vision features, (N, num_image_tokens, 1280): the global mean first when configured,
        then the grid cells row by row. Cacheable since the tower never trains."""
        if self.engine is not None:
            maps = self.engine.vision_maps(pixel_values)
        else:
            self.vision_tower.eval()  # batch-norm statistics stay ImageNet's
            maps = self.vision_tower.extract_features(pixel_values.to(self.vision_dtype))
        tokens = F.adaptive_avg_pool2d(maps, self.config.image_grid).flatten(2).transpose(1, 2)
        if self.config.global_image_token:
            tokens = torch.cat([maps.mean(dim=(2, 3)).unsqueeze(1), tokens], dim=1)
        return tokens.float()

    @property
    def vision_dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with each image's projected features written over its placeholders."""
        embeds = self.get_input_embeddings()(input_ids)
        if image_features is None and pixel_values is not None:
            image_features = self.image_features(pixel_values)
        if image_features is None:
            return embeds
        image_mask = input_ids == self.config.image_token_id
        expected = int(image_mask.sum())
        projected = self.multi_modal_projector(image_features.to(self.multi_modal_projector[0].weight.dtype))
        projected = projected.reshape(-1, projected.shape[-1])
        if projected.shape[0] != expected:
            raise ValueError(
                f"{expected} image placeholder tokens but features for {projected.shape[0]} "
                f"({image_features.shape[0]} images x {self.config.num_image_tokens} tokens)"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1), projected.to(embeds.dtype))

    @staticmethod
    def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        # Count real tokens only, so left padding does not shift positions.
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    # --- forward ---------------------------------------------------------------------------------
    def _language_inputs(self, input_ids, attention_mask, pixel_values, image_features, position_ids):
        embeds = self.embed_inputs(input_ids, pixel_values, image_features)
        if position_ids is None and attention_mask is not None:
            position_ids = self.positions_from_mask(attention_mask)
        return embeds, position_ids

    def last_hidden_state(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds, position_ids = self._language_inputs(input_ids, attention_mask, pixel_values, image_features,
                                                     position_ids)
        if self.engine is not None and not torch.is_grad_enabled():
            if attention_mask is None:
                attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            if position_ids is None:
                position_ids = self.positions_from_mask(attention_mask)
            return self.engine.decoder_hidden(embeds, attention_mask, position_ids).to(embeds.device)
        output = self.language_model.model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return output.last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ):
        embeds, position_ids = self._language_inputs(input_ids, attention_mask, pixel_values, image_features,
                                                     position_ids)
        return self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            **kwargs,
        )
