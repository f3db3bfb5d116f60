#!/usr/bin/env bash
# The main job: set up, then adapt the offline all-MiniLM-L6-v2 to the bundled dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/kadapt run examples/quickstart.yaml "$@"
