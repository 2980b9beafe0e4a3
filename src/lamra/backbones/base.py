"""The one interface every LMM sits behind.

The retriever, reranker and trainers only ever see a :class:`Backbone`: it turns chat-style messages
(with PIL images) into model inputs, returns last-layer hidden states, and maps hidden states to
next-token logits. Which LMM it is (Qwen2-VL, Qwen2.5-VL, the compact model) is known only here and
in the concrete subclasses.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from lamra.items import InputError, to_rgb
from lamra.prompts import EMB_TOKEN

Messages = list[dict[str, Any]]
IGNORE_INDEX = -100


@contextmanager
def quiet_peft():
    """peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a
    FutureWarning on every adapter load; the warning is for peft's authors, not our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@dataclass
class RenderedConversation:
    """A conversation as template text with image placeholders, and its images in order."""

    text: str
    images: list[Image.Image]


def render_chatml(
    messages: Messages,
    image_placeholder: str,
    system: str | None,
    add_generation_prompt: bool = False,
    assistant_prefix: str = "",
) -> RenderedConversation:
    """ChatML as Qwen2-VL's template writes it: ``<|im_start|>role\\n...<|im_end|>\\n`` per turn.

    ``system`` is the default system turn added when the conversation has none (Qwen2-VL: "You are a
    helpful assistant."). ``assistant_prefix`` starts an assistant turn without closing it (used by
    listwise scoring, which reads the logits right after ``Ans: (``).
    """
    parts: list[str] = []
    images: list[Image.Image] = []
    if system is not None and (not messages or messages[0]["role"] != "system"):
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for message in messages:
        parts.append(f"<|im_start|>{message['role']}\n")
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for piece in content:
            if piece["type"] == "image":
                parts.append(image_placeholder)
                images.append(to_rgb(piece["image"]))  # transparent pixels onto white
            else:
                parts.append(piece["text"])
        parts.append("<|im_end|>\n")
    if add_generation_prompt or assistant_prefix:
        parts.append("<|im_start|>assistant\n" + assistant_prefix)
    return RenderedConversation("".join(parts), images)


def cut_sequence(sequence: list[int], max_length: int | None, image_token_id: int) -> list[int]:
    """The first ``max_length`` tokens of a tokenised item (all when None). A cut through an image's
    tokens is refused: its features would no longer fit the slots left for them."""
    if max_length is None or len(sequence) <= max_length:
        return sequence
    if image_token_id in sequence[max_length:]:
        raise InputError(f"cutting an item at {max_length} tokens would cut through an image "
                         f"({len(sequence)} tokens in all); raise the document length limit")
    return sequence[:max_length]


def pad_sequences(
    sequences: list[list[int]], pad_id: int, padding_side: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one tensor; returns (input_ids, attention_mask)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


class Backbone(ABC):
    """An LMM with a tokenizer, seen through what LamRA needs of it."""

    #: a short name for reports ("qwen2-vl", "compact")
    kind: str = ""

    def __init__(self, model: torch.nn.Module, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        if EMB_TOKEN not in tokenizer.get_vocab():
            raise ValueError(f"tokenizer has no {EMB_TOKEN} token; load through from_pretrained")
        self.emb_token_id = tokenizer.convert_tokens_to_ids(EMB_TOKEN)

    # --- inputs ----------------------------------------------------------------------------------
    @abstractmethod
    def build_inputs(
        self,
        conversations: list[Messages],
        add_generation_prompt: bool = False,
        assistant_prefix: str = "",
        padding_side: str = "left",
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokenise and batch conversations (images included) into model inputs; with ``max_length``
        each token sequence is cut to that many tokens (``cut_sequence``)."""

    def build_training_inputs(
        self, conversations: list[Messages], padding_side: str = "right"
    ) -> dict[str, torch.Tensor]:
        """Inputs plus ``labels`` that supervise only the final assistant turn (its text and the
        closing ``<|im_end|>``); everything before it is -100."""
        prompt_lengths = []
        for messages in conversations:
            if messages[-1]["role"] != "assistant":
                raise ValueError("a training conversation must end with an assistant turn")
            prompt = self.build_inputs([messages[:-1]], add_generation_prompt=True)
            prompt_lengths.append(int(prompt["attention_mask"].sum()))
        inputs = self.build_inputs(conversations, padding_side=padding_side)
        labels = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
        for row, prompt_length in enumerate(prompt_lengths):
            positions = inputs["attention_mask"][row].nonzero().flatten()
            answer = positions[prompt_length:-1]  # drop the trailing newline after <|im_end|>
            labels[row, answer] = inputs["input_ids"][row, answer]
        inputs["labels"] = labels
        return inputs

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """Cut text to ``max_tokens`` tokens, as the official code does before building prompts."""
        ids = self.tokenize(text)
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def truncate_segments(self, segments: list, max_tokens: int) -> list:
        """Each text segment cut to ``max_tokens`` tokens (``truncate_text``); images pass unchanged."""
        return [self.truncate_text(s, max_tokens) if isinstance(s, str) else s for s in segments]

    # --- model -----------------------------------------------------------------------------------
    @abstractmethod
    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last-layer hidden states (after the final norm), shape (batch, seq, hidden)."""

    @property
    def hf_model(self):
        """The transformers model under any peft wrapper."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def output_embeddings(self) -> torch.nn.Module:
        """The lm_head: maps hidden states to next-token logits."""
        return self.hf_model.get_output_embeddings()

    def logits_at(self, hidden: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """Next-token logits. ``fp32``: the lm_head in float32 whatever the weights' dtype or any
        autocast (bf16 logits near 20 move in steps of 0.125, enough to tie close scores)."""
        head = self.output_embeddings()
        if not fp32:
            return head(hidden)
        bias = None if head.bias is None else head.bias.float()
        with torch.autocast(hidden.device.type, enabled=False):
            return torch.nn.functional.linear(hidden.float(), head.weight.float(), bias)

    @property
    @abstractmethod
    def lora_target_modules(self) -> str | list[str]:
        """peft ``target_modules``: every Linear of the language model, nothing else."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
