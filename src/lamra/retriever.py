"""LamRA-Ret: where the embedding is taken.

An item becomes one conversation (its segments, "Summarize above ... in one word: ", then the
assistant turn ``<emb>.``); its embedding is the last-layer hidden state at the position just before
``<emb>``, L2-normalised. Cosine similarity between such vectors ranks candidates. A compact model
with an appearance channel (``lamra.appearance``) appends its image-likeness block to that vector, and
one with a colour channel (``lamra.colour``) its colour block; its rows are then compared by inner
product (``similarity == "dot"``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from lamra.appearance import AppearanceChannel
from lamra.backbones.base import Backbone
from lamra.cast_once import bf16_weights
from lamra.colour import ColourChannel, colour_histogram
from lamra.items import InputError, Segment, to_segment_batch, with_instruction
from lamra.prompts import MAX_TEXT_TOKENS, embedding_messages

# A rough cost of one image in the length sort (visual tokens outweigh its placeholder text).
IMAGE_SORT_WEIGHT = 64


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def uses_bf16_autocast(device: torch.device, precision: str) -> bool:
    """``precision``: "fp32", "bf16" or "auto" (bf16 autocast where the hardware has it)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    return precision == "bf16" or (precision == "auto" and bf16_supported(device))


def autocast_for(device: torch.device, precision: str, model: torch.nn.Module | None = None):
    """bf16 autocast when ``uses_bf16_autocast``, else nothing. With ``model`` and gradients off
    (inference), its linear weights are cast to bf16 once instead of at every call
    (``lamra.cast_once``: the same numbers, fewer copies)."""
    if not uses_bf16_autocast(device, precision):
        return contextlib.nullcontext()
    if model is None or torch.is_grad_enabled():
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return _autocast_with_bf16_weights(device, model)


@contextlib.contextmanager
def _autocast_with_bf16_weights(device: torch.device, model: torch.nn.Module):
    with torch.autocast(device.type, dtype=torch.bfloat16), bf16_weights(model):
        yield


def pool_before_emb(
    hidden: torch.Tensor, input_ids: torch.Tensor, emb_token_id: int, cut_rows_take_last: bool = False
) -> torch.Tensor:
    """Each row's hidden state at the token just before its (last) ``<emb>``; found by id, not by
    position, so left and right padding give the same vector. A row whose ``<emb>`` was cut away
    raises, or with ``cut_rows_take_last`` (left padding) gives its last token, as the official
    evaluation does for a candidate cut at its length limit."""
    is_emb = input_ids == emb_token_id
    has_emb = is_emb.any(dim=1)
    if not cut_rows_take_last and not bool(has_emb.all()):
        rows = (~has_emb).nonzero().flatten().tolist()
        raise ValueError(f"no <emb> token in batch rows {rows} (truncated input?)")
    width = input_ids.shape[1]
    before_emb = width - 2 - is_emb.flip(dims=[1]).int().argmax(dim=1)
    position = torch.where(has_emb, before_emb, torch.full_like(before_emb, width - 1))
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), position.to(hidden.device)]


def embed_conversations(
    backbone: Backbone, conversations: list, padding_side: str = "left", max_length: int | None = None
) -> torch.Tensor:
    """Unnormalised embeddings of ready-made conversations (trainers call this with gradients on).
    ``max_length``: cut each token sequence there (left padding only), pooling the last kept token
    of a sequence that lost its ``<emb>``."""
    if max_length is not None and padding_side != "left":
        raise ValueError("max_length needs left padding (a cut row's last token is then the batch's last)")
    inputs = backbone.build_inputs(conversations, padding_side=padding_side, max_length=max_length)
    if padding_side == "left" and max_length is None:
        inputs = drop_tail_after_emb(inputs, backbone.emb_token_id)
    hidden = backbone.hidden_states(inputs)
    return pool_before_emb(hidden, inputs["input_ids"].to(hidden.device), backbone.emb_token_id,
                           cut_rows_take_last=max_length is not None)


# Inputs whose columns are token positions (cut with input_ids); anything else is per image or per row.
PER_TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def drop_tail_after_emb(inputs: dict[str, torch.Tensor], emb_token_id: int) -> dict[str, torch.Tensor]:
    """Cut the template tokens that follow ``<emb>`` (``.``, ``<|im_end|>`` and a newline). The pooled
    state, the one before ``<emb>``, cannot see them in a causal model, so the embedding is the same and
    the forward shorter. With left padding every row's ``<emb>`` sits in the same column; otherwise
    nothing is cut."""
    ids = inputs["input_ids"]
    is_emb = ids == emb_token_id
    if ids.numel() == 0 or not bool(is_emb.any(dim=1).all()):
        return inputs
    last_emb = ids.shape[1] - 1 - is_emb.flip(dims=[1]).int().argmax(dim=1)
    keep = int(last_emb[0]) + 1
    if bool((last_emb != last_emb[0]).any()) or keep == ids.shape[1]:
        return inputs
    return {key: value[:, :keep] if key in PER_TOKEN_KEYS else value for key, value in inputs.items()}


def sort_key(segments: list[Segment]) -> int:
    return sum(len(s) if isinstance(s, str) else IMAGE_SORT_WEIGHT for s in segments)


@dataclass(frozen=True)
class Truncation:
    """Where inputs are cut before encoding.

    ``text_tokens``: every text segment cut to this many tokens (None: never). ``document_tokens``:
    a document's whole token sequence (prompt and image tokens included) cut to this many, as the
    official evaluation cuts candidates; a document that loses its ``<emb>`` is pooled at its last
    kept token, as there (None: never). Queries are never cut as a whole.
    """

    text_tokens: int | None = MAX_TEXT_TOKENS
    document_tokens: int | None = None


# The compact model keeps what it was trained and evaluated with; the Qwen path follows the official
# evaluation (queries whole, candidates cut at 1,024 tokens of the whole sequence).
COMPACT_TRUNCATION = Truncation(text_tokens=MAX_TEXT_TOKENS)
OFFICIAL_TRUNCATION = Truncation(text_tokens=None, document_tokens=1024)
ROLES = ("query", "document")


def default_truncation(backbone: Backbone) -> Truncation:
    return COMPACT_TRUNCATION if backbone.kind == "compact" else OFFICIAL_TRUNCATION


class Retriever:
    """Encodes items with a backbone. Used through :class:`lamra.LamRA`."""

    def __init__(self, backbone: Backbone, precision: str = "auto", truncation: Truncation | None = None,
                 appearance: AppearanceChannel | None = None, colour: ColourChannel | None = None):
        self.backbone = backbone
        self.precision = precision
        self.truncation = truncation or default_truncation(backbone)
        if appearance is not None and not getattr(backbone.hf_model.config, "global_image_token", False):
            raise ValueError("an appearance channel needs a compact backbone with the global image token")
        self.appearance = appearance
        hidden = backbone.hf_model.config.get_text_config().hidden_size
        if colour is not None and colour.embedding_dims != hidden:
            raise ValueError(f"the colour channel reads {colour.embedding_dims}-d embeddings; this backbone's are {hidden}-d")
        self.colour = colour

    @property
    def similarity(self) -> str:
        """How embeddings are compared: "cosine" (unit rows), or "dot" with a score channel."""
        return "cosine" if self.appearance is None and self.colour is None else "dot"

    @property
    def dims(self) -> int:
        hidden = self.backbone.hf_model.config.get_text_config().hidden_size
        return hidden + sum(channel.dims for channel in (self.appearance, self.colour) if channel is not None)

    def prepare(self, segments: list[Segment], instruction: str | None) -> list[dict[str, Any]]:
        """The LamRA-Ret conversation of one item (instruction prefixed, texts cut per ``truncation``)."""
        segments = with_instruction(segments, instruction)
        limit = self.truncation.text_tokens
        if limit is not None:
            segments = self.backbone.truncate_segments(segments, limit)
        return embedding_messages(segments)

    @torch.no_grad()
    def encode(
        self,
        items: Sequence[Any],
        instruction: str | Sequence[str | None] | None = None,
        batch_size: int = 16,
        show_progress: bool = False,
        image_root=None,
        convert_to_numpy: bool = True,
        role: str = "query",
    ) -> np.ndarray | torch.Tensor:
        """Embeddings, one row per item, in input order (float32): L2-normalised, or with score
        channels the unit LMM embedding followed by the appearance block and the colour block.
        ``role`` "document" applies ``truncation.document_tokens`` and gives the colour block of a
        candidate (its colours) instead of a query's (the colours it asks for)."""
        if role not in ROLES:
            raise InputError(f"role must be one of {ROLES}, got {role!r}")
        max_length = self.truncation.document_tokens if role == "document" else None
        segments = to_segment_batch(items, image_root=image_root)
        instructions = _per_item(instruction, len(segments))
        order = sorted(range(len(segments)), key=lambda i: -sort_key(segments[i]))
        vectors: list[torch.Tensor] = [None] * len(segments)  # type: ignore[list-item]
        self.backbone.model.eval()
        progress = tqdm(total=len(order), desc="encode", unit="item", disable=not show_progress)
        with autocast_for(self.backbone.device, self.precision, self.backbone.model):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                conversations = [self.prepare(segments[i], instructions[i]) for i in chunk]
                embedded = embed_conversations(self.backbone, conversations, max_length=max_length)
                embeddings = F.normalize(embedded.float(), dim=-1)
                blocks = [embeddings]
                if self.appearance is not None:
                    blocks.append(self._appearance_block([segments[i] for i in chunk]))
                if self.colour is not None:
                    blocks.append(self._colour_block([segments[i] for i in chunk], embeddings, role))
                embeddings = torch.cat(blocks, dim=1)
                for i, vector in zip(chunk, embeddings.cpu(), strict=True):
                    vectors[i] = vector
                progress.update(len(chunk))
        progress.close()
        if not vectors:
            result = torch.empty((0, self.dims))
        else:
            result = torch.stack(vectors)
        return result.numpy() if convert_to_numpy else result

    def _appearance_block(self, items: list[list[Segment]]) -> torch.Tensor:
        """The channel's block of each item: from the mean global trunk feature of its images (the
        feature cache has them from the forward pass just run, under the same precision)."""
        images_of = [_images_in(segments) for segments in items]
        features = np.zeros((len(items), self.appearance.mean.shape[0]), np.float32)
        every_image = [image for images in images_of for image in images]
        if every_image:  # one cache lookup for the whole chunk
            found = self.backbone.global_image_features(every_image).numpy()
            start = 0
            for row, images in enumerate(images_of):
                if images:
                    features[row] = found[start : start + len(images)].mean(axis=0)
                    start += len(images)
        has_image = np.array([bool(images) for images in images_of])
        return torch.from_numpy(self.appearance.vectors(features, has_image))

    def _colour_block(self, items: list[list[Segment]], embeddings: torch.Tensor, role: str) -> torch.Tensor:
        """The channel's block of each item: a candidate's colours (``role="document"``), or the
        colours a query asks for. An item with several images has their mean histogram."""
        histograms = np.zeros((len(items), len(self.colour.mean)), np.float32)
        has_image = np.zeros(len(items), bool)
        for row, segments in enumerate(items):
            images = _images_in(segments)
            if images:
                histograms[row] = np.mean([colour_histogram(image) for image in images], axis=0)
                has_image[row] = True
        if role == "document":
            block = self.colour.document_vectors(histograms, has_image)
        else:
            block = self.colour.query_vectors(embeddings.cpu().numpy(), histograms, has_image)
        return torch.from_numpy(block)


def _images_in(segments: list[Segment]) -> list[Image.Image]:
    return [s for s in segments if isinstance(s, Image.Image)]


def _per_item(instruction, count: int) -> list[str | None]:
    if instruction is None or isinstance(instruction, str):
        return [instruction] * count
    instructions = list(instruction)
    if len(instructions) != count:
        raise InputError(f"got {len(instructions)} instructions for {count} items")
    return instructions
