#!/usr/bin/env bash
# Train the compact LamRA end to end on PocketBEIR, then package it into src/lamra/weights/compact
# and write the training report. Every stage checkpoints: re-running this script after an
# interruption resumes where it stopped (finished stages are skipped).
#
#   bash scripts/train_compact.sh           (after bash scripts/setup.sh and lamra data build pocketbeir)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LAMRA=.venv/bin/lamra
TIMINGS=runs/timings.json
[[ -f "$TIMINGS" ]] || echo '{}' > "$TIMINGS"

timed() {  # timed NAME COMMAND...: run once, record its wall minutes in runs/timings.json
    local name="$1"; shift
    local start; start=$(date +%s)
    "$@"
    .venv/bin/python - "$TIMINGS" "$name" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
path, name, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
timings = json.load(open(path)); timings[name] = round(seconds / 60, 1)
json.dump(timings, open(path, "w"), indent=2)
PY
}

stage() {  # stage NAME: train unless its final/ exists
    [[ -f "runs/compact-$1/final/lamra.json" ]] || "$LAMRA" train "$1" --recipe "recipes/compact-$1.yaml"
}

stage stage0
stage stage1
[[ -d runs/compact-stage1/merged ]] || "$LAMRA" train merge --recipe recipes/compact-stage1.yaml
stage stage2
[[ -f runs/compact-stage2/mined_top100.jsonl ]] || timed mining "$LAMRA" train mine --recipe recipes/compact-rank.yaml --retriever runs/compact-stage2/final
stage rank
.venv/bin/python -m lamra.train.package runs/compact-stage2/final runs/compact-rank/final src/lamra/weights/compact
.venv/bin/python scripts/evaluate_pocketbeir.py all
.venv/bin/python -m lamra.train.report --runs runs --timings "$TIMINGS" --eval results/stages.md --out docs/training \
    --diagnose "${LAMRA_HOME:-$HOME/.cache/lamra}/pocketbeir" --notes docs/training/notes.md
