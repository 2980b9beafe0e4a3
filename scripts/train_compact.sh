#!/usr/bin/env bash
# Train the compact LamRA end to end on PocketBEIR, then package it into src/lamra/weights/compact,
# fit its score channels (appearance, then colour) and write the training report. Every stage checkpoints: re-running this script after an
# interruption resumes where it stopped (finished stages are skipped).
#
#   bash scripts/train_compact.sh           (after bash scripts/setup.sh and lamra data build pocketbeir)
#   bash scripts/train_compact.sh gpu       stages 1 and 2 from recipes/compact-gpu-stage1.yaml and
#                                           compact-gpu-6epoch-stage2.yaml (batch 128 on one GPU; ~9 min
#                                           on an H200): the shipped model's recipes
set -euo pipefail
PROFILE=${1:-cpu}
case "$PROFILE" in
    cpu) S1=compact-stage1 S2=compact-stage2 ;;
    gpu) S1=compact-gpu-stage1 S2=compact-gpu-6epoch-stage2 ;;
    *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac
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

stage() {  # stage STAGE RECIPE: train unless its final/ exists
    [[ -f "runs/$2/final/lamra.json" ]] || "$LAMRA" train "$1" --recipe "recipes/$2.yaml"
}

stage stage0 compact-stage0
stage stage1 "$S1"
[[ -d "runs/$S1/merged" ]] || "$LAMRA" train merge --recipe "recipes/$S1.yaml"
stage stage2 "$S2"
MINED="runs/$S2/mined_local_top100.jsonl"  # the rank recipe's mining, by this profile's retriever
[[ -f "$MINED" ]] || timed mining "$LAMRA" train mine --recipe recipes/compact-rank.yaml --retriever "runs/$S2/final" --out "$MINED"
[[ -f runs/compact-rank/final/lamra.json ]] || "$LAMRA" train rank --recipe recipes/compact-rank.yaml --set "rerank_data=$MINED"
.venv/bin/python -m lamra.train.package "runs/$S2/final" runs/compact-rank/final src/lamra/weights/compact
timed appearance .venv/bin/python scripts/fit_appearance.py  # PCA on training images, its settings chosen on val
timed colour .venv/bin/python scripts/fit_colour.py  # fitted on training queries, its weights chosen on val
.venv/bin/python scripts/evaluate_pocketbeir.py all
.venv/bin/python scripts/evaluate_rerank.py all
.venv/bin/python -m lamra.train.report --runs runs --timings "$TIMINGS" --eval results/stages.md --out docs/training \
    --diagnose "${LAMRA_HOME:-$HOME/.cache/lamra}/pocketbeir" --notes docs/training/notes.md --profile "$PROFILE"
