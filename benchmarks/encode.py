"""Encode throughput of the compact LMM: text-only and image+text batches, fp32 vs bf16 autocast.

Prints items/s, the achieved GFLOP/s of the language model's matmuls (and EfficientNet's, for images),
and a plain torch GEMM measured in the same process as the ceiling, with every figure also as a ratio
to the fp32 baseline and as a share of the bf16 GEMM.

With OpenVINO installed (``pip install 'lamra[openvino]'``) the first table also has the
``backend="openvino"`` rows (the vision trunk and the decoder in OpenVINO, in fp32 and bf16).

A second table splits the image+text encode (bf16 weights) into its parts, each timed alone on the
same batches: image preprocessing, the vision tower, the language model on cached vision features,
and the language model's Linear products run as bare GEMMs of the same shapes (what the language
model would take if nothing but its matrix products cost time), and the tower and language model
in OpenVINO bf16. From those it derives the best share of the GEMM ceiling this model can reach
with its vision tower as it is.

    .venv/bin/python benchmarks/encode.py [--items 64] [--batch-size 16] [--repeats 2] [--compile]
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
from lamra.backbones.openvino_engine import use_openvino
from lamra.backbones.compact_modeling import preprocess_images
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


def best_time(run, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after one untimed one."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def linear_shapes(backbone: CompactBackbone) -> list[tuple[int, int]]:
    """(in, out) of every Linear in the language model's layers, in call order."""
    layers = backbone.hf_model.language_model.model.layers
    return [(m.in_features, m.out_features) for m in layers.modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def parts(backbone: CompactBackbone, model: LamRA, items: list, batch_size: int, repeats: int,
          compiled: bool = False, engine=None) -> list[tuple]:
    """(part, seconds for all items, GFLOP) of an image+text encode, each part timed alone on the same
    batches as ``measure`` runs them (longest first), with ``backbone``'s weights in bf16. ``compiled``
    adds the language model under ``torch.compile`` (its elementwise work fused; compiling takes a minute);
    ``engine`` (an ``OpenVINOEngine``) adds the tower and the language model run by it."""
    order = sorted(items, key=lambda item: -len(item[0]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    images = [[image for _, image in batch] for batch in batches]
    pixels = [preprocess_images(batch) for batch in images]
    hf = backbone.hf_model
    backbone.select_attention()
    inputs = [drop_tail_after_emb(backbone.build_inputs([model.retriever.prepare([image, text], None)
                                                         for text, image in batch]), backbone.emb_token_id)
              for batch in batches]  # vision features now cached: the forward below runs the LM alone
    tokens = [int(batch["attention_mask"].numel()) for batch in inputs]  # padded rows run too
    real_tokens = sum(int(batch["attention_mask"].sum()) for batch in inputs)
    shapes = linear_shapes(backbone)
    operands = [(torch.randn(count, fan_in, dtype=torch.bfloat16), torch.randn(fan_in, fan_out, dtype=torch.bfloat16))
                for count in tokens for fan_in, fan_out in shapes]

    def gemms():
        for a, b in operands:
            torch.mm(a, b)

    lm_flops = 2 * matmul_params(backbone) * real_tokens / 1e9
    vision_flops = len(items) * EFFICIENTNET_LITE0_FLOPS / 1e9
    extra = []
    if compiled:
        language_model = torch.compile(hf.language_model.model, dynamic=True)

        def run_compiled():
            for batch in inputs:
                embeds, positions = hf._language_inputs(batch["input_ids"], batch["attention_mask"], None,
                                                        batch["image_features"], None)
                language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=positions,
                               use_cache=False)

        extra.append(("  under torch.compile", best_time(run_compiled, repeats), lm_flops))
    tower_in_openvino = []
    if engine is not None:
        tower_in_openvino.append((f"  in OpenVINO {engine.precision}",
                                  best_time(lambda: [engine.vision_maps(batch) for batch in pixels], repeats),
                                  vision_flops))
        decoder_inputs = []
        for batch in inputs:
            embeds, positions = hf._language_inputs(batch["input_ids"], batch["attention_mask"], None,
                                                    batch["image_features"], None)
            decoder_inputs.append((embeds.float(), batch["attention_mask"], positions))
        extra.append((f"  in OpenVINO {engine.precision}",
                      best_time(lambda: [engine.decoder_hidden(*batch) for batch in decoder_inputs], repeats),
                      lm_flops))
    return [
        ("image preprocessing", best_time(lambda: [preprocess_images(batch) for batch in images], repeats), 0.0),
        ("vision tower", best_time(lambda: [hf.image_features(batch.to(hf.vision_dtype)) for batch in pixels],
                                   repeats), vision_flops),
        *tower_in_openvino,
        ("language model", best_time(lambda: [backbone.hidden_states(batch) for batch in inputs], repeats),
         lm_flops),
        *extra,
        ("  its Linear GEMMs alone", best_time(gemms, repeats), lm_flops * sum(tokens) / real_tokens),
    ]


def print_parts(rows: list[tuple], end_to_end: float, items: int, peak: float) -> None:
    """The parts table, then the ceiling: the language model at its GEMMs' speed, the rest as measured."""
    print(f"\nwhere an image+text encode's time goes (bf16 weights, {items} items; each part timed alone)")
    print(f"{'part':<26}{'s':>8}{'of encode':>11}{'GFLOP':>8}{'GFLOP/s':>9}{'of bf16 GEMM':>14}")
    for part, seconds, gflop in rows:
        rate = f"{gflop / seconds:9.0f}{gflop / seconds / peak:14.0%}" if gflop else ""
        print(f"{part:<26}{seconds:8.3f}{seconds / end_to_end:11.0%}{gflop:8.0f}{rate}")
    print(f"{'encode, end to end':<26}{end_to_end:8.3f}{1:11.0%}")
    seconds = dict((part, s) for part, s, _ in rows)
    flops = sum(gflop for part, _, gflop in rows if not part.startswith(" "))
    other = end_to_end - seconds["image preprocessing"] - seconds["vision tower"] - seconds["language model"]
    bound = end_to_end - seconds["language model"] + seconds["  its Linear GEMMs alone"]
    cached = bound - seconds["vision tower"]  # every image's features already in the cache
    print(f"the rest (tokenising, padding, pooling): {other:.3f} s.\nWith the language model as fast as its "
          f"GEMMs and all else as measured: {items / bound:.1f} items/s, {flops / bound:.0f} GFLOP/s, "
          f"{flops / bound / peak:.0%} of the bf16 GEMM; the same with every image's vision features "
          f"cached (the tower's FLOPs still counted): {flops / cached / peak:.0%}.")


def variants(backbone: CompactBackbone):
    """fp32 weights; fp32 weights under bf16 autocast; the weights themselves cast to bf16."""
    yield "fp32", LamRA(backbone, precision="fp32")
    yield "bf16 autocast", LamRA(backbone, precision="bf16")
    bf16 = CompactBackbone(copy.deepcopy(backbone.model).to(torch.bfloat16), backbone.tokenizer)
    yield "bf16 weights", LamRA(bf16, precision="fp32")
    if openvino_installed():
        engine_backbone = CompactBackbone(copy.deepcopy(backbone.model), backbone.tokenizer)
        for precision in ("fp32", "bf16"):
            use_openvino(engine_backbone, precision)
            yield f"openvino {precision}", LamRA(engine_backbone, precision=precision)


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the language model under torch.compile")
    args = parser.parse_args()

    backbone = CompactBackbone.from_parts()
    rows = []
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rows.append(("torch GEMM 2048^3", dtype_name, None, gemm_gflops(dtype)))
    for name, items in workloads(args.items).items():
        for label, model in variants(backbone):
            per_second, gflops = measure(model, items, args.batch_size, args.repeats)
            rows.append((f"encode {name}", label, per_second, gflops))
            if label == "bf16 weights":  # the last workload's (image+text) is split into its parts below
                weights_model, weights_speed = model, per_second
    engine = model.backbone.hf_model.engine  # the last variant's: OpenVINO bf16 when installed
    split = parts(weights_model.backbone, weights_model, items, args.batch_size, args.repeats, args.compile, engine)

    peak = dict((precision, gflops) for workload, precision, _, gflops in rows if workload.startswith("torch GEMM"))
    print(f"\ncompact LMM encode, {args.items} items, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'workload':<22}{'precision':<16}{'items/s':>9}{'x fp32':>8}{'GFLOP/s':>10}{'x fp32':>8}{'of bf16 GEMM':>14}")
    baseline: dict[str, tuple] = {}
    for workload, precision, per_second, gflops in rows:
        base = baseline.setdefault(workload, (per_second, gflops))
        speed = "" if per_second is None else f"{per_second:9.1f}{per_second / base[0]:8.2f}"
        print(f"{workload:<22}{precision:<16}{speed or ' ' * 17}{gflops:10.0f}{gflops / base[1]:8.2f}"
              f"{gflops / peak['bf16']:14.0%}")
    print_parts(split, args.items / weights_speed, args.items, peak["bf16"])


if __name__ == "__main__":
    main()
