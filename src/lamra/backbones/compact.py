"""The compact LMM behind the backbone interface, and how it is assembled from packaged parts."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import OrderedDict
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoTokenizer, LlamaForCausalLM

from lamra.assets import efficientnet_lite0_weights, smollm2_dir
from lamra.atomic_io import atomic_write
from lamra.backbones.base import Backbone, Messages, cut_sequence, pad_sequences, quiet_peft, render_chatml
from lamra.backbones.compact_modeling import (
    CompactLMMConfig,
    CompactLMMForConditionalGeneration,
    preprocess_images,
)
from lamra.prompts import EMB_TOKEN

IMAGE_TOKEN = "<image>"


# The language model's attention kernel on every device: plain matmul attention ("eager"). On CPU,
# PyTorch's fused SDPA kernel is slower on sequences this short (its backward most of all: a training
# step takes about 1.2x as long, benchmarks/train_step.py). On CUDA, SDPA with left-padded bf16 batches
# gave a NaN loss in all four stage-2 runs of one H200 lease (steps 23 to 86); rerun with this kernel,
# the three that fit in memory trained to the end, no slower (0.52 s a step at batch 128 with four runs
# sharing the card). Both compute the same function.
ATTENTION_KERNEL = "eager"

# Tokens in one packed pass of the shared-prefix scorer: a query and its top 10 fit in one; much
# longer packs lose to the attention matrix, which grows with the square of the pack.
PACKED_TOKENS = 512


def pack_rows(sizes: list[int], budget: int) -> list[list[int]]:
    """Consecutive rows grouped so that each group's sizes sum to at most ``budget`` (a row larger
    than the budget goes alone)."""
    groups: list[list[int]] = []
    used = budget
    for row, size in enumerate(sizes):
        if used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(row)
        used += size
    return groups


def prefix_tree_mask(owner: torch.Tensor) -> torch.Tensor:
    """The additive attention mask of a packed sequence: ``owner`` is -1 on the shared prefix and
    i on the tokens of the i-th remainder. A token sees the tokens before it that are its own or
    the prefix's."""
    order = torch.arange(owner.numel(), device=owner.device)
    allowed = (order[None, :] <= order[:, None]) & ((owner[None, :] == -1) | (owner[None, :] == owner[:, None]))
    blocked = torch.zeros(allowed.shape, dtype=torch.float32, device=owner.device)
    return blocked.masked_fill_(~allowed, torch.finfo(torch.float32).min)[None, None]


AutoConfig.register(CompactLMMConfig.model_type, CompactLMMConfig, exist_ok=True)
AutoModel.register(CompactLMMConfig, CompactLMMForConditionalGeneration, exist_ok=True)


class VisionFeatureCache:
    """Frozen-tower features keyed by image content, so each image is run through EfficientNet once.

    ``persist_to(folder)`` also keeps them on disk (safetensors shards, one per ``flush``; written to a
    temp file and renamed, so processes sharing a folder never see half a shard): the tower and its
    weights never change, so a feature is a pure function of the image, the visual-token layout and
    the precision the tower ran in, and training runs and evaluations of the same images stop paying
    ~50 ms per image each time. The precision is part of each key: features computed under bf16
    autocast differ from fp32 ones by about 1e-2, and an fp32 run must not be handed bf16 features
    because a bf16 run (in this process or an earlier one) computed them first.
    """

    def __init__(self, max_items: int = 50_000, flush_every: int = 1024):
        self.max_items = max_items
        self.flush_every = flush_every  # when persisted: write a shard once this many are new
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._folder: Path | None = None
        self._unsaved: set[str] = set()

    def persist_to(self, folder: str | os.PathLike, layout: str) -> int:
        """Load the features saved under ``folder/layout`` and save new ones there; returns how many loaded.
        ``layout`` names the visual-token layout (e.g. ``grid3-global``): features of another differ."""
        from safetensors.torch import load_file

        self._folder = Path(folder) / layout
        self._folder.mkdir(parents=True, exist_ok=True)
        loaded = 0
        for shard in sorted(self._folder.glob("*.safetensors")):
            for key, feature in load_file(shard).items():
                if key not in self._store:
                    self._store[key] = feature
                    loaded += 1
        return loaded

    def flush(self) -> Path | None:
        """Write the features computed since the last flush as one new shard (no-op when none)."""
        from safetensors.torch import save_file

        keys = [k for k in self._unsaved if k in self._store]
        self._unsaved.clear()
        if self._folder is None or not keys:
            return None
        tensors = {k: self._store[k].contiguous() for k in keys}
        return atomic_write(self._folder / f"{uuid.uuid4().hex}.safetensors", lambda temp: save_file(tensors, str(temp)))

    @staticmethod
    def key(image: Image.Image) -> str:
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(f"{image.mode}{image.size}".encode())
        return digest.hexdigest()

    @staticmethod
    def tower_precision(model: CompactLMMForConditionalGeneration) -> str:
        """How the tower computes at this moment: in OpenVINO, or under the caller's autocast, if one is on."""
        if model.engine is not None:
            return f"openvino-{model.engine.precision}"
        device_type = model.device.type
        if torch.is_autocast_enabled(device_type):
            return f"{str(torch.get_autocast_dtype(device_type)).removeprefix('torch.')}-autocast"
        return str(model.vision_dtype).removeprefix("torch.")

    def get_many(self, model: CompactLMMForConditionalGeneration, images: list[Image.Image]) -> torch.Tensor:
        precision = self.tower_precision(model)
        keys = [f"{precision}:{self.key(image)}" for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            pixels = preprocess_images([images[i] for i in missing]).to(model.device)
            features = model.image_features(pixels).cpu()
            for i, feature in zip(missing, features, strict=True):
                self._store[keys[i]] = feature
                self._unsaved.add(keys[i])
            if self._folder is not None and len(self._unsaved) >= self.flush_every:
                self.flush()
        for k in keys:
            self._store.move_to_end(k)
        batch = torch.stack([self._store[k] for k in keys])
        while len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return batch

    def __len__(self) -> int:
        return len(self._store)


def build_compact_from_parts(image_grid: int = 3, seed: int = 0, global_image_token: bool = False):
    """A fresh compact LMM: pretrained SmolLM2 + pretrained EfficientNet-Lite0 + a new projector."""
    lm_dir = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, EMB_TOKEN]})
    language_model = LlamaForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    torch.manual_seed(seed)  # before the resize too: the new tokens' rows are drawn at random
    language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = CompactLMMConfig(
        text_config=language_model.config,
        image_grid=image_grid,
        global_image_token=global_image_token,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
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
    def from_parts(cls, image_grid: int = 3, seed: int = 0, global_image_token: bool = False) -> CompactBackbone:
        return cls(*build_compact_from_parts(image_grid, seed, global_image_token))

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

            with quiet_peft():
                model = PeftModel.from_pretrained(model, adapter)
        model.to(device).eval()
        return cls(model, tokenizer)

    def persist_features(self, folder: str | os.PathLike | None = None) -> int:
        """Keep vision features on disk (default ``$LAMRA_HOME/vision-features``); see VisionFeatureCache."""
        from lamra.assets import lamra_home

        config = self.hf_model.config
        # Keys carry the tower's precision (``VisionFeatureCache.tower_precision``); folders of the
        # earlier "<tower>-<dtype>-grid..." layouts held untagged keys of mixed precision and are not read.
        layout = f"{config.vision_model_name}-grid{config.image_grid}{'-global' if config.global_image_token else ''}"
        return self.feature_cache.persist_to(folder or lamra_home() / "vision-features", layout)

    def global_image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """The trunk's global (mean-pooled) feature of each image, (n, 1280), through the feature cache
        (under the caller's autocast, as the forward pass computes it). Needs the global image token."""
        if not self.hf_model.config.global_image_token:
            raise ValueError("global image features need a compact model with the global image token")
        return self.feature_cache.get_many(self.hf_model, images)[:, 0]  # token 0: the global mean

    @property
    def lora_target_modules(self) -> str:
        return r".*language_model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj"

    def build_inputs(
        self,
        conversations: list[Messages],
        add_generation_prompt: bool = False,
        assistant_prefix: str = "",
        padding_side: str = "left",
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        sequences, images = [], []
        image_token_id = self.hf_model.config.image_token_id
        for messages in conversations:
            rendered = render_chatml(
                messages, self.image_placeholder, None, add_generation_prompt, assistant_prefix
            )
            sequences.append(cut_sequence(self.tokenize(rendered.text), max_length, image_token_id))
            images += rendered.images
        input_ids, attention_mask = pad_sequences(sequences, self.tokenizer.pad_token_id, padding_side)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if images:
            inputs["image_features"] = self.feature_cache.get_many(self.hf_model, images)
        return inputs

    @torch.no_grad()
    def last_hidden_with_shared_prefix(self, conversations: list[Messages],
                                       max_tokens: int = PACKED_TOKENS) -> torch.Tensor:
        """The last-token hidden state of each conversation (generation prompt added), with the
        tokens every conversation shares at its start run once per pass. A pass packs that prefix
        and as many conversations' remainders as fit in ``max_tokens`` into one sequence (no
        padding); each remainder attends to the prefix and to itself only, at the positions it has
        in its whole conversation, so the result equals running every conversation whole. One pass
        for a query and its top 10, where a key/value cache would need a second."""
        inputs = self.build_inputs(conversations, add_generation_prompt=True, padding_side="right")
        ids, mask = inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        lengths = mask.sum(dim=1).tolist()
        features = inputs.get("image_features")
        embeds = self.hf_model.embed_inputs(ids, image_features=None if features is None else features.to(self.device))
        # Compared on embeddings, not ids: different images share their placeholder ids.
        differs = (embeds != embeds[:1]).any(dim=-1).any(dim=0) | (mask == 0).any(dim=0)
        shared = int(differs.int().argmax()) if bool(differs.any()) else ids.shape[1]
        shared = min(shared, min(lengths) - 1)  # every row keeps at least its last token
        self.select_attention()
        decoder = self.hf_model.language_model.model
        last = []
        for rows in pack_rows([length - shared for length in lengths], max_tokens - shared):
            sizes = torch.tensor([shared] + [lengths[row] - shared for row in rows])
            owner = torch.repeat_interleave(torch.arange(-1, len(rows)), sizes).to(self.device)
            positions = torch.cat([torch.arange(shared)] + [torch.arange(shared, lengths[row]) for row in rows])
            hidden = decoder(
                inputs_embeds=torch.cat([embeds[0, :shared]] + [embeds[row, shared:lengths[row]] for row in rows])[None],
                attention_mask=prefix_tree_mask(owner),
                position_ids=positions[None].to(self.device),
            ).last_hidden_state[0]
            last.append(hidden[sizes.cumsum(0)[1:] - 1])
        return torch.cat(last)

    def select_attention(self) -> None:
        """Use ``ATTENTION_KERNEL`` (a loaded model starts with transformers' default, SDPA)."""
        config = self.hf_model.language_model.config
        if config._attn_implementation != ATTENTION_KERNEL:
            config._attn_implementation = ATTENTION_KERNEL

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.select_attention()
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.hf_model.last_hidden_state(**inputs)
