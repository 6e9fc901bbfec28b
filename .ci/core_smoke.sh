#!/usr/bin/env bash
# The core install, alone: a second virtual environment with `pip install .` (no extras, not editable), then
# .ci/core_smoke.py in it (build the tiny model, one training step, predict, save/load, and no optional
# package importable). Proves that `pip install ximgctx` is the model library and nothing more.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
CORE_VENV=${CORE_VENV:-.venv-core}
# The same torch pins as the Makefile's, installed first so pip resolves the rest against them.
TORCH_SPEC=${TORCH_SPEC:-$(sed -n 's/^TORCH_SPEC ?= //p' Makefile)}
start=$(date +%s)
test -x "$CORE_VENV/bin/python" || python3 -m venv "$CORE_VENV"
"$CORE_VENV/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
"$CORE_VENV/bin/python" -m pip install -q $TORCH_SPEC
# Non-editable, no extras: the wheel's files (package data included) are what the smoke test reads.
"$CORE_VENV/bin/python" -m pip install -q .
echo "core venv ready in $(($(date +%s) - start)) s"
# Run from a folder outside the tree, so `import ximgctx` is the installed package, not ./ximgctx.
here=$PWD
cd "$(mktemp -d)"
PYTHONPATH= "$here/$CORE_VENV/bin/python" "$here/.ci/core_smoke.py"
echo "core smoke test passed in $(($(date +%s) - start)) s"
