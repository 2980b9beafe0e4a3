"""Parity of the Qwen path with the official LamRA-Ret forward, on the real checkpoint (GPU).

    .venv/bin/python scripts/check_qwen_parity.py [--model code-kunkun/LamRA-Ret] [--device cuda]

Encodes text, image and image+text items through `lamra` (the checkpoint's default positions) and
through the official forward written out in `lamra.backbones.qwen_reference`, and prints the cosine of
each pair (1.0 up to bf16 noise expected) beside the cosine `lamra` would give with M-RoPE instead.
Needs the weights (a local directory, or the hub reachable); without them it says so and exits 0.
Exits 1 when a pair falls below --min-cosine.
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="code-kunkun/LamRA-Ret")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()

    from PIL import Image

    from lamra.backbones.qwen_reference import official_embedding
    from lamra.backbones.qwen_vl import QwenVLBackbone
    from lamra.demo import DEMO_DIR
    from lamra.prompts import embedding_messages
    from lamra.retriever import embed_conversations

    try:
        backbone = QwenVLBackbone.from_pretrained(args.model, dtype=torch.bfloat16, device=args.device)
    except (OSError, ValueError) as error:
        print(f"{args.model}: weights not available here ({type(error).__name__}); nothing to check")
        return
    cat = Image.open(DEMO_DIR / "twitter-1f431.png")
    items = {
        "text": embedding_messages(["a pet that meows"]),
        "image": embedding_messages([cat]),
        "image+text": embedding_messages([cat, "the same emoji in another style"]),
    }
    print(f"{args.model} on {args.device}, default positions: {backbone.position_mode}\n")
    print("| item | cosine to official | with M-RoPE |")
    print("|---|---:|---:|")
    worst = 1.0
    for name, conversation in items.items():
        reference = official_embedding(backbone, conversation).float()
        with torch.no_grad():
            ours = embed_conversations(backbone, [conversation])[0].float()
            mode = backbone.position_mode
            backbone.set_position_mode("mrope")
            mrope = embed_conversations(backbone, [conversation])[0].float()
            backbone.set_position_mode(mode)
        cosine = float(torch.nn.functional.cosine_similarity(ours, reference, dim=0))
        other = float(torch.nn.functional.cosine_similarity(mrope, reference, dim=0))
        worst = min(worst, cosine)
        print(f"| {name} | {cosine:.6f} | {other:.6f} |")
    if worst < args.min_cosine:
        sys.exit(f"parity below {args.min_cosine}: {worst:.6f}")


if __name__ == "__main__":
    main()
