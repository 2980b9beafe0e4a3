"""The official LamRA-Ret forward, written out: the reference the Qwen path is checked against.

Code-kunkun/LamRA's retrieval model (models/qwen2_vl.py there) embeds the tokens, writes the vision
tower's output into the image-pad slots, calls the decoder with ``position_ids=None`` (so every token
is numbered 0, 1, 2, ...) and takes the hidden state just before ``<emb>``. This module does exactly
that, one unpadded item at a time, for tests on tiny random models and the parity check on real
weights (``scripts/check_qwen_parity.py``).
"""

from __future__ import annotations

import torch

from lamra.backbones.qwen_vl import QwenVLBackbone


@torch.no_grad()
def official_embedding(backbone: QwenVLBackbone, conversation) -> torch.Tensor:
    """The unnormalised LamRA-Ret embedding of one conversation, as the official forward computes it."""
    inputs = {k: v.to(backbone.device) for k, v in backbone.build_inputs([conversation]).items()}
    model = backbone.hf_model.model
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    if "pixel_values" in inputs:
        pixels = inputs["pixel_values"].to(backbone.dtype)
        image_embeds = model.visual(pixels, grid_thw=inputs["image_grid_thw"])
        image_embeds = getattr(image_embeds, "pooler_output", image_embeds)  # the merged patches
        embeds[inputs["input_ids"] == backbone.image_token_id] = image_embeds.to(embeds.dtype)
    hidden = model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                  position_ids=None, use_cache=False).last_hidden_state
    emb_at = int((inputs["input_ids"][0] == backbone.emb_token_id).nonzero()[-1])
    return hidden[0, emb_at - 1]
