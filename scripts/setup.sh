#!/usr/bin/env bash
# Set up everything kadapt needs on a fresh machine, idempotently: a virtual environment in
# .venv with the CPU build of torch, DeepSpeed (pure Python; ops JIT-built on first use),
# the project with its dev extra, and the Prometheus server used by one end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KADAPT_VENV:-.venv}
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }

stamp="$VENV/.kadapt-setup"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first, and the CPU wheel: a plain `torch` would pull a multi-GB CUDA build.
  pip install -q -c constraints.txt "torch==2.13.0"
  # DeepSpeed ships as source and imports torch in its setup: no build isolation, no prebuilt ops.
  DS_BUILD_OPS=0 pip install -q -c constraints.txt --no-build-isolation deepspeed
  pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi

# DeepSpeed JIT-compiles its CPU comm op once; keep the build between runs.
mkdir -p "${TORCH_EXTENSIONS_DIR:-$HOME/.cache/kadapt/torch_extensions}"

if [ -x scripts/install-prometheus.sh ]; then
  scripts/install-prometheus.sh
fi
