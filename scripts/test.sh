#!/usr/bin/env bash
# The test command: set up (scripts/setup.sh), install Prometheus for its one end-to-end test
# (scripts/install-prometheus.sh; without it that test skips, naming the script), then ruff,
# mypy and every test. Arguments go to pytest (e.g. -m "not slow", or test paths).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/install-prometheus.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/kadapt/torch_extensions}
VENV=$(cd "${KADAPT_VENV:-.venv}" && pwd)
export PATH="$VENV/bin:$PATH"  # tools installed into the venv (prometheus without root)
"$VENV"/bin/ruff check .
"$VENV"/bin/mypy
"$VENV"/bin/lint-imports  # import contracts: [tool.importlinter] in pyproject.toml
exec "$VENV"/bin/python -m pytest "$@"
