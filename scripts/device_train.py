"""Train several recipes side by side on one borrowed GPU, each run sent home the moment it ends.

    PYTHONPATH=src python3 scripts/device_train.py --out "$OUT" --minutes 8.5 \
        compact-gpu-rank compact-gpu-grouped-rank

Each recipe runs as its own ``lamra train <stage>`` process (the stage read from the recipe) with
``max_minutes`` set to the time left before the deadline minus ``--margin`` (the trainer times its
first steps and shortens the run to fit), so the runs end on their own, with a final/ each. As each
process exits, its final/, losses.jsonl, recipe.yaml and hardware.json are copied to OUT/<recipe>/
(its log is written there all along) and OUT/summary.json is rewritten: a call cut at the device's
limit still returns every run that had finished (``lamra.train.side_by_side``). Runs still going at
``--minutes`` are stopped; their logs and loss curves come back.

On the device machine, python3 already holds torch, transformers and peft; the project runs from the
checkout with ``PYTHONPATH=src``. The data it reads ($LAMRA_HOME: PocketBEIR, the SmolLM2 copy, the
vision features) and any mined file must travel with the call (``carry``, 64 MiB a call).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lamra.train.recipe import load_recipe, parse_override
from lamra.train.side_by_side import Job, run_side_by_side


def jobs_for(recipes: list[str], budget_minutes: float, overrides: list[str]) -> list[Job]:
    jobs = []
    for name in recipes:
        # a bad name, key or value fails here, before anything starts; the overrides may move the run's folder
        recipe = load_recipe(name, dict(parse_override(text) for text in overrides))
        command = [sys.executable, "-m", "lamra.cli", "train", recipe.stage, "--recipe", name, "--quiet",
                   "--set", f"max_minutes={budget_minutes}"]
        for override in overrides:
            command += ["--set", override]
        jobs.append(Job(recipe.name, command, recipe.run_dir))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="recipe names (recipes/) or YAML files")
    parser.add_argument("--out", type=Path, required=True, help="where each run's results are copied ($OUT)")
    parser.add_argument("--minutes", type=float, required=True, help="deadline: runs still going are stopped")
    parser.add_argument("--margin", type=float, default=1.5,
                        help="minutes kept free before the deadline for loading, saving and copying (default 1.5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a recipe override given to every run, e.g. --set device=cuda (repeatable)")
    args = parser.parse_args()
    budget = args.minutes - args.margin
    if budget <= 0:
        parser.error(f"--minutes {args.minutes} leaves no training time after --margin {args.margin}")
    results = run_side_by_side(jobs_for(args.recipes, budget, args.overrides), args.out, deadline_s=60 * args.minutes)
    for result in results:
        print(f"{result.name}: {result.status} (exit {result.returncode}) after {result.minutes} min; "
              f"copied: {', '.join(result.copied) or 'nothing'}")
    sys.exit(0 if all(r.status == "finished" for r in results) else 1)


if __name__ == "__main__":
    main()
