"""Encode throughput of the compact LMM: text-only and image+text batches, fp32 vs bf16 autocast.

Prints items/s, the achieved GFLOP/s of the language model's matmuls (and EfficientNet's, for images),
and a plain torch GEMM measured in the same process as the ceiling, with every figure also as a ratio
to the fp32 baseline and as a share of the bf16 GEMM.

    .venv/bin/python benchmarks/encode.py [--items 64] [--batch-size 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from PIL import Image

from lamra import LamRA
from lamra.backbones.compact import CompactBackbone, VisionFeatureCache
from lamra.demo import DEMO_DIR, load_collection
from lamra.retriever import drop_tail_after_emb

EFFICIENTNET_LITE0_FLOPS = 2 * 385e6  # 385M multiply-adds at 224x224 (Tan & Le, 2019)


def gemm_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The best of ``repeats`` timed GEMMs after three untimed ones (the first calls of a dtype pay for
    oneDNN's kernel selection and page faults, and would understate the ceiling)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def matmul_params(backbone: CompactBackbone) -> int:
    """Parameters of the language model's Linear layers (the FLOPs per token are twice this)."""
    layers = backbone.hf_model.language_model.model.layers
    return sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))


def workloads(count: int) -> dict[str, list]:
    collection = load_collection()
    images = [Image.open(DEMO_DIR / r["img_path"]) for r in collection]
    texts = [f"{r['label']}, a picture one might find in a set of everyday emoji number {i}" for i, r in
             enumerate(collection * (count // len(collection) + 1))][:count]
    pairs = [(texts[i], images[i % len(images)]) for i in range(count)]
    return {"text": texts, "image+text": pairs}


def measure(model: LamRA, items: list, batch_size: int, repeats: int) -> tuple[float, float]:
    """(items/s, GFLOP/s), the vision cache emptied before each run so images are really encoded."""
    backbone = model.backbone
    segments = [model.retriever.prepare([i] if isinstance(i, str) else [i[1], i[0]], None) for i in items]
    # The tokens the forward really runs: the template tail after <emb> is cut before it.
    tokens = int(drop_tail_after_emb(backbone.build_inputs(segments), backbone.emb_token_id)["attention_mask"].sum())
    images = sum(1 for i in items if not isinstance(i, str))
    flops = 2 * matmul_params(backbone) * tokens + images * EFFICIENTNET_LITE0_FLOPS
    model.encode(items[:batch_size], batch_size=batch_size)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        backbone.feature_cache = VisionFeatureCache()
        start = time.perf_counter()
        model.encode(items, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(items) / best, flops / best / 1e9


def variants(backbone: CompactBackbone):
    """fp32 weights; fp32 weights under bf16 autocast; the weights themselves cast to bf16."""
    yield "fp32", LamRA(backbone, precision="fp32")
    yield "bf16 autocast", LamRA(backbone, precision="bf16")
    bf16 = CompactBackbone(copy.deepcopy(backbone.model).to(torch.bfloat16), backbone.tokenizer)
    yield "bf16 weights", LamRA(bf16, precision="fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    backbone = CompactBackbone.from_parts()
    rows = []
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rows.append(("torch GEMM 2048^3", dtype_name, None, gemm_gflops(dtype)))
    for name, items in workloads(args.items).items():
        for label, model in variants(backbone):
            per_second, gflops = measure(model, items, args.batch_size, args.repeats)
            rows.append((f"encode {name}", label, per_second, gflops))

    peak = dict((precision, gflops) for workload, precision, _, gflops in rows if workload.startswith("torch GEMM"))
    print(f"\ncompact LMM encode, {args.items} items, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'workload':<22}{'precision':<16}{'items/s':>9}{'x fp32':>8}{'GFLOP/s':>10}{'x fp32':>8}{'of bf16 GEMM':>14}")
    baseline: dict[str, tuple] = {}
    for workload, precision, per_second, gflops in rows:
        base = baseline.setdefault(workload, (per_second, gflops))
        speed = "" if per_second is None else f"{per_second:9.1f}{per_second / base[0]:8.2f}"
        print(f"{workload:<22}{precision:<16}{speed or ' ' * 17}{gflops:10.0f}{gflops / base[1]:8.2f}"
              f"{gflops / peak['bf16']:14.0%}")


if __name__ == "__main__":
    main()
