#!/usr/bin/env bash
# Train the compact LamRA end to end on PocketBEIR, then package it into src/lamra/weights/compact
# and write the training report. Every stage checkpoints: re-running this script after an
# interruption resumes where it stopped (finished stages are skipped).
#
#   bash scripts/train_compact.sh           (after bash scripts/setup.sh and lamra data build pocketbeir)
#   bash scripts/train_compact.sh gpu       stages 1 and 2 from recipes/compact-gpu-*.yaml (batch 128 on
#                                           one GPU: the shipped model's recipes; ~5 min on an H200)
set -euo pipefail
PROFILE=${1:-cpu}
case "$PROFILE" in
    cpu) S1=compact-stage1 S2=compact-stage2 ;;
    gpu) S1=compact-gpu-stage1 S2=compact-gpu-stage2 ;;
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
RET_PACKAGE="runs/$S2-package"  # LamRA-Ret as it ships (adapters folded, bf16): the reranker trains on it
[[ -f "$RET_PACKAGE/lamra.json" ]] || .venv/bin/python -m lamra.train.package "runs/$S2/final" "$RET_PACKAGE"
MINED="runs/$S2/mined_local_all_top100.jsonl"  # every training query, by the retriever that ships
[[ -f "$MINED" ]] || timed mining "$LAMRA" train mine --recipe recipes/compact-onret-rank.yaml \
    --retriever "$RET_PACKAGE" --top-k 100 --out "$MINED"
[[ -f runs/compact-onret-rank/final/lamra.json ]] || "$LAMRA" train rank --recipe recipes/compact-onret-rank.yaml \
    --set "rerank_data=$MINED" --set "init_from=$RET_PACKAGE"
.venv/bin/python -m lamra.train.package "$RET_PACKAGE" runs/compact-onret-rank/final src/lamra/weights/compact
.venv/bin/python scripts/evaluate_pocketbeir.py all
.venv/bin/python scripts/evaluate_rerank.py all
.venv/bin/python -m lamra.train.report --runs runs --timings "$TIMINGS" --eval results/stages.md --out docs/training \
    --diagnose "${LAMRA_HOME:-$HOME/.cache/lamra}/pocketbeir" --notes docs/training/notes.md --profile "$PROFILE"
