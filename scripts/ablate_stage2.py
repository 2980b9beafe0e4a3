"""Stage-2 ablations of the compact recipe: which of its choices make the model see.

    .venv/bin/python scripts/ablate_stage2.py all            # train + evaluate every variant, write the page
    .venv/bin/python scripts/ablate_stage2.py run NAME       # one variant
    .venv/bin/python scripts/ablate_stage2.py page           # results/ablations.md from what is done

Every variant is a short stage-2 run (``STEPS`` steps, the same seed, data and batch size) from the
merged stage-1 weights, with a few keys of ``recipes/compact-stage2.yaml`` changed, then evaluated
on a seeded val subset (``SUBSET``: 80 queries per task, local pools of whole concepts plus 300
distractor concepts; EmojiVariant keeps its full pool). Val only: test is never used to choose.
Finished variants are kept, so a rerun only does what is missing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lamra.assets import lamra_home
from lamra.pocketbeir.subset import subset_mbeir
from lamra.evaluate.report import load_results, write_report
from lamra.evaluate.runner import evaluate_mbeir
from lamra.evaluate.tables import results_page, write_markdown
from lamra.train.recipe import load_recipe
from lamra.train.stages import run_stage

COMMAND = ".venv/bin/python scripts/ablate_stage2.py all"
STEPS = 40
SUBSET = ("val", 80, 300)  # split, queries per task, distractor concepts
OUT = Path("results/ablations")
# The new recipe, the first shipped model's stage-2 settings, then the new recipe less one choice.
OLD = dict(train_projector=False, global_image_token=False, batch_by_task=False, symmetric_loss=False,
           no_instruction_ratio=0.0, lora_dropout=0.05)
VARIANTS = {
    "new recipe": {},
    "new, lr 1e-3": {"lr": 1.0e-3},
    "old recipe": OLD,
    "new - task batches": {"batch_by_task": False},
    "new - global token": {"global_image_token": False},
}


def subset_root() -> Path:
    root = lamra_home() / "pocketbeir-val-ablate"
    if not root.is_dir():
        split, queries, distractors = SUBSET
        subset_mbeir(lamra_home() / "pocketbeir", root, split, queries, distractors, seed=0)
    return root


def slug(name: str) -> str:
    return name.replace(" ", "_").replace("+", "plus").replace("-", "minus").replace(",", "")


def run_variant(name: str) -> None:
    out = OUT / slug(name)
    if (out / "results.json").is_file():
        print(f"{name}: done already ({out})")
        return
    overrides = {**VARIANTS[name], "max_steps": STEPS, "save_every": STEPS, "output_dir": f"runs/ablate-{slug(name)}"}
    recipe = load_recipe("compact-stage2", overrides)
    start = time.perf_counter()
    result = run_stage(recipe)
    minutes = (time.perf_counter() - start) / 60
    from lamra import LamRA

    model = LamRA.from_pretrained(result.final_dir)
    model.backbone.persist_features()
    report = evaluate_mbeir(model, subset_root(), method=name, split=SUBSET[0], pools=("local",), show_progress=True)
    model.backbone.feature_cache.flush()
    path = write_report(report, out, command=COMMAND)
    losses = result.losses
    tail = sum(losses[-10:]) / len(losses[-10:])
    (out / "train.txt").write_text(f"{minutes:.1f} min, {result.train.seconds_per_step:.2f} s/step, "
                                   f"loss {losses[0]:.3f} -> {tail:.3f} (last 10)\n")
    print(f"{name}: {minutes:.1f} min training -> {path}")


def write_page() -> None:
    rows, notes = [], []
    for name in VARIANTS:
        path = OUT / slug(name) / "results.json"
        if path.is_file():
            rows += load_results(path)["results"]
            train = (OUT / slug(name) / "train.txt").read_text().strip()
            overrides = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "as recipes/compact-stage2.yaml"
            notes.append(f"- **{name}** ({overrides}): {train}")
    split, queries, distractors = SUBSET
    note = (f"Each variant: {STEPS} stage-2 steps of batch 32 from the merged stage-1 weights, same seed and data. "
            f"Evaluated on a seeded {split} subset ({queries} queries per task; local pools of whole concepts: "
            f"the positives' concepts + {distractors} distractor concepts; EmojiVariant's full pool), not test.\n\n"
            + "\n".join(notes))
    page = results_page(rows, title="Stage-2 ablations of the compact recipe (val subset, local pools)",
                        pools=("local",), methods=[n for n in VARIANTS if any(r["method"] == n for r in rows)],
                        notes=note)
    write_markdown("results/ablations.md", COMMAND, page)
    print("wrote results/ablations.md")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    if argv[0] == "run" and len(argv) == 2 and argv[1] in VARIANTS:
        run_variant(argv[1])
    elif argv[0] == "page":
        write_page()
    elif argv[0] == "all":
        for name in VARIANTS:
            run_variant(name)
        write_page()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
