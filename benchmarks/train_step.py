"""Stage-2 training throughput of the compact LMM: the first shipped pipeline against today's, in one process.

Both run ``lamra.train.retrieval.contrastive_step_fn`` (GradCache, batch 32, max_length 96, bf16
autocast, LoRA r16 on every Linear of the language model) on PocketBEIR's training queries:

- before: LoRA dropout 0.05, batches drawn across all 8 tasks, the vision cache cold (every image of
  a step goes through EfficientNet, as in the first epoch of the first shipped run);
- after:  the compact recipe (recipes/compact-stage2.yaml): no LoRA dropout, one task per batch (no
  long passage pads a batch of short image queries), features of the frozen tower computed once and
  kept on disk; it also trains the projector, adds the global visual token and the reverse loss, which
  cost time rather than save it.

Prints examples/s per setting (the ratio is after / before) and, for "after", where a step's time goes.

    .venv/bin/python benchmarks/train_step.py [--steps 4]     (needs lamra data build pocketbeir)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from lamra.backbones.compact import CompactBackbone, VisionFeatureCache
from lamra.prompts import embedding_messages
from lamra.train.lora import add_lora
from lamra.train.recipe import load_recipe
from lamra.train.retrieval import contrastive_step_fn, make_embed_fn, stage2_example
from lamra.train.schedule import BatchOrder, GroupedBatchOrder
from lamra.train.stages.mbeir_data import MBEIRTrainData

SETTINGS = {
    "before": dict(lora_dropout=0.05, batch_by_task=False, train_projector=False, global_image_token=False,
                   symmetric_loss=False, no_instruction_ratio=0.0),
    "after": {},  # recipes/compact-stage2.yaml as it is
}


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
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting (after one warm-up)")
    args = parser.parse_args()
    data = MBEIRTrainData.from_recipe(load_recipe("compact-stage2"))
    speeds, profile = {}, {}
    for name, settings in SETTINGS.items():
        recipe, backbone, order, step, optimizer = build(settings, data, warm=name == "after")
        backbone.model.train()
        seconds = 0.0
        for i in range(args.steps + 1):
            indices = order.global_indices(100 + i)  # the same steps for both settings' seeds
            optimizer.zero_grad(set_to_none=True)
            took = timed(lambda: (step(indices, 0), optimizer.step()))
            seconds += took if i else 0.0  # the first step warms up allocators and caches
        speeds[name] = args.steps * recipe.batch_size / seconds
        if name == "after":  # where the time goes, on one more batch
            embed = make_embed_fn(backbone, recipe)
            examples = []
            profile["make examples (images decoded)"] = timed(lambda: examples.extend(
                stage2_example(data, i, 0, 0, recipe.no_instruction_ratio) for i in order.global_indices(200)))
            sides = [[e[0] for e in examples], [e[1] for e in examples]]
            profile["build inputs (tokenise, vision features)"] = timed(
                lambda: [backbone.build_inputs([embedding_messages(s) for s in side]) for side in sides])
            with torch.no_grad():
                profile["forward, both sides"] = timed(lambda: [embed(side) for side in sides])
            profile["full step (forward + backward + AdamW)"] = timed(lambda: (step(order.global_indices(200), 0),
                                                                                 optimizer.step()))
        del backbone, step, optimizer
    print(f"\nStage-2 training throughput, batch 32, {args.steps} timed steps each, "
          f"{torch.get_num_threads()} threads\n")
    print("| setting | examples/s | ratio to before |\n|---|---:|---:|")
    for name, speed in speeds.items():
        print(f"| {name} | {speed:.2f} | {speed / speeds['before']:.2f}x |")
    total = profile["full step (forward + backward + AdamW)"]
    print("\nWhere an 'after' step goes (one batch)\n\n| phase | seconds | share of the step |\n|---|---:|---:|")
    for phase, seconds in profile.items():
        print(f"| {phase} | {seconds:.2f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
