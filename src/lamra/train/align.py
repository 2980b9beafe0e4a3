"""Stage 0 (compact LMM only): align the fresh projector with the frozen language model.

Next-token loss on short captions of training-split images, with only the MLP projector trainable
(vision tower and language model frozen, no LoRA). Captions come from the training queries of the
M-BEIR-format data: (image, name) whenever one side of a training pair is an image alone and the
other a text alone, and the (image, text) candidates that are training positives. The
conversation is ``user: <image>\\n{CAPTION_PROMPT}`` -> ``assistant: {caption}``; only the caption
tokens (and the closing ``<|im_end|>``) count in the loss.
"""

from __future__ import annotations

from lamra.data.mbeir import IMAGE, IMAGE_TEXT, TEXT, normalize_modality
from lamra.prompts import format_mbeir_text
from lamra.train.stages.mbeir_data import MBEIRTrainData

CAPTION_PROMPT = "Describe the image in a few words."

Caption = tuple[str, str]  # (img_path, caption text)


def training_captions(data: MBEIRTrainData) -> list[Caption]:
    """Unique (image, caption) pairs from the training queries and their positives, sorted."""
    found: set[Caption] = set()
    for query in data.queries:
        qmod = normalize_modality(query.query_modality)
        for did in data.positives(query):
            cand = data.pool[did]
            cmod = normalize_modality(cand.modality)
            if qmod == TEXT and cmod == IMAGE and query.query_txt and cand.img_path:
                found.add((cand.img_path, query.query_txt))
            elif qmod == IMAGE and cmod == TEXT and query.query_img_path and cand.txt:
                found.add((query.query_img_path, cand.txt))
            elif cmod == IMAGE_TEXT and cand.img_path and cand.txt:
                found.add((cand.img_path, cand.txt))
    captions = sorted((img, format_mbeir_text(text)) for img, text in found if text.strip())
    return captions


def caption_messages(image, caption: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "\n" + CAPTION_PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": caption}]},
    ]
