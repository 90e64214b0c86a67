#!/usr/bin/env bash
# Create .venv and install the project into it. Safe to run again: it only installs what is missing.
#
# TORCH_REQUIREMENT picks the torch build, because pip's default torch on Linux is a CUDA build of
# several GB. A CPU-only machine can set it to a CPU wheel (for example torch==2.13.0 where that CPU
# wheel is on the local index); unset, an installed torch is kept and otherwise pip chooses.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi

if [[ -n "${TORCH_REQUIREMENT:-}" ]]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$TORCH_REQUIREMENT"
elif ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check torch
fi

# The project itself, editable so that the workflow's rules run this checkout's code.
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
echo "setup: ready; $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')" >&2
