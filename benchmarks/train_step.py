"""Stage-2 training throughput of the compact LMM: the first shipped pipeline, then each speed-up added
on top of the one before, all in one process.

Every row runs ``lamra.train.retrieval.contrastive_step_fn`` (GradCache, batch 32, max_length 96, bf16
autocast, LoRA r16 on every Linear of the language model) on PocketBEIR's training queries:

1. first pipeline: LoRA dropout 0.05, batches drawn across all 8 tasks, the vision cache cold (every
   image of a step goes through EfficientNet, as in the first epoch of the first shipped run), PyTorch's
   SDPA attention kernel, peft's casts of every LoRA input, the template tail after ``<emb>`` kept, each
   side in one padded forward;
2. + compact recipe (recipes/compact-stage2.yaml): no LoRA dropout, one task per batch, features of the
   frozen tower computed once and kept on disk (it also trains the projector, adds the global visual
   token and the reverse loss, which cost time rather than save it);
3. + plain matmul attention on CPU (``lamra.backbones.compact.ATTENTION_KERNEL``);
4. + no peft input casts under autocast (``disable_input_dtype_casting``: the same arithmetic);
5. + the template tokens after ``<emb>`` cut (``drop_tail_after_emb``: the pooled state cannot see them).

Rows 2-5 train on the same batches; row 1 draws mixed-task batches, as that pipeline did. Prints
examples/s per row and its ratio to row 1, and where a step of the last row goes.

    .venv/bin/python benchmarks/train_step.py [--steps 3]     (needs lamra data build pocketbeir)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

import lamra.backbones.compact as compact
import lamra.retriever as retriever
import lamra.train.retrieval as retrieval
from lamra.backbones.compact import CompactBackbone, VisionFeatureCache
from lamra.prompts import embedding_messages
from lamra.train.lora import add_lora
from lamra.train.recipe import load_recipe
from lamra.train.retrieval import contrastive_step_fn, make_embed_fn, stage2_example
from lamra.train.schedule import BatchOrder, GroupedBatchOrder
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.trainer import autocast

FIRST_PIPELINE = dict(lora_dropout=0.05, batch_by_task=False, train_projector=False, global_image_token=False,
                      symmetric_loss=False, no_instruction_ratio=0.0)
# name -> (recipe overrides, speed-ups on): each row adds one speed-up to the row before.
SPEED_UPS = ("eager attention", "no peft casts", "tail cut")
ROWS = {
    "first pipeline": (FIRST_PIPELINE, 0),
    "+ compact recipe (one-task batches, features on disk)": ({}, 0),
    "+ plain matmul attention on CPU": ({}, 1),
    "+ no peft input casts": ({}, 2),
    "+ template tail after <emb> cut": ({}, 3),
}
ORIGINALS = (compact.ATTENTION_KERNEL, retrieval.disable_input_dtype_casting, retriever.drop_tail_after_emb)


def switch_speed_ups(count: int) -> None:
    """Turn the first ``count`` of SPEED_UPS' code paths on, the others off."""
    attention, casting, tail = ORIGINALS
    compact.ATTENTION_KERNEL = attention if count >= 1 else "sdpa"
    retrieval.disable_input_dtype_casting = casting if count >= 2 else (lambda model, active: contextlib.nullcontext())
    retriever.drop_tail_after_emb = tail if count >= 3 else (lambda inputs, emb_token_id: inputs)


def build(settings: dict, data: MBEIRTrainData, warm: bool):
    recipe = load_recipe("compact-stage2", {**settings, "init_from": None})
    torch.manual_seed(0)
    backbone = CompactBackbone.from_parts(image_grid=3, global_image_token=recipe.global_image_token)
    if warm:
        backbone.persist_features()
    else:
        backbone.feature_cache = VisionFeatureCache()
    add_lora(backbone, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
    if recipe.train_projector:
        backbone.hf_model.multi_modal_projector.requires_grad_(True)
    order = (GroupedBatchOrder(data.task_groups(), recipe.batch_size, recipe.seed) if recipe.batch_by_task
             else BatchOrder(len(data), recipe.batch_size, recipe.seed))
    step = contrastive_step_fn(backbone, recipe,
                               lambda i, e: stage2_example(data, i, e, 0, recipe.no_instruction_ratio))
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    return recipe, backbone, order, step, torch.optim.AdamW(params, lr=recipe.lr)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after one warm-up)")
    args = parser.parse_args()
    data = MBEIRTrainData.from_recipe(load_recipe("compact-stage2"))
    speeds, profile = {}, {}
    last = list(ROWS)[-1]
    for name, (settings, speed_ups) in ROWS.items():
        switch_speed_ups(speed_ups)
        recipe, backbone, order, step, optimizer = build(settings, data, warm=name != "first pipeline")
        backbone.model.train()
        seconds = 0.0
        for i in range(args.steps + 1):
            indices = order.global_indices(100 + i)  # the same steps in every row of one batch order
            optimizer.zero_grad(set_to_none=True)
            took = timed(lambda: (step(indices, 0), optimizer.step()))
            seconds += took if i else 0.0  # the first step warms up allocators and caches
        speeds[name] = args.steps * recipe.batch_size / seconds
        if name == last:  # where the time goes, on one more batch
            embed = make_embed_fn(backbone, recipe)
            examples = []
            profile["make examples (images decoded)"] = timed(lambda: examples.extend(
                stage2_example(data, i, 0, 0, recipe.no_instruction_ratio) for i in order.global_indices(200)))
            sides = [[e[0] for e in examples], [e[1] for e in examples]]
            with autocast(recipe, backbone.device):  # as in a step: vision features are kept per precision
                profile["build inputs (tokenise, vision features)"] = timed(
                    lambda: [backbone.build_inputs([embedding_messages(s) for s in side]) for side in sides])
            with torch.no_grad():
                profile["forward, both sides"] = timed(lambda: [embed(side) for side in sides])
            profile["full step (forward + backward + AdamW)"] = timed(lambda: (step(order.global_indices(200), 0),
                                                                                 optimizer.step()))
        del backbone, step, optimizer
    switch_speed_ups(len(SPEED_UPS))
    first = speeds["first pipeline"]
    print(f"\nStage-2 training throughput, batch 32, {args.steps} timed steps each, "
          f"{torch.get_num_threads()} threads\n")
    print("| setting | examples/s | ratio to the first pipeline |\n|---|---:|---:|")
    for name, speed in speeds.items():
        print(f"| {name} | {speed:.2f} | {speed / first:.2f}x |")
    total = profile["full step (forward + backward + AdamW)"]
    print("\nWhere a step of the last row goes (one batch)\n\n| phase | seconds | share of the step |\n|---|---:|---:|")
    for phase, seconds in profile.items():
        print(f"| {phase} | {seconds:.2f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
