#!/usr/bin/env bash
# Compatibility run on TensorFlow 2.20, the newest release that tensorflow-tpu
# ships (TPU users cannot run 2.21): a second virtualenv, .venv-tf220, with the
# core engine and distribution test modules. CI runs it after the main suite.
#
# Usage: bash tools/run_tests_tf220.sh [extra pytest args]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
VENV="$REPO_ROOT/.venv-tf220"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[tf220] creating $VENV ..."
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.tfk_stamp"
WANT="$(cksum < pyproject.toml | cut -d' ' -f1)-tf220"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[tf220] installing tensorflow 2.20 and the test tools ..."
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "tensorflow==2.20.*" "tensorboard>=2.20,<2.21" "keras>=3.12,<3.16" ml-collections pytest pytest-xdist pytest-timeout portpicker
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -e . --config-settings editable_mode=compat
  echo "$WANT" > "$STAMP"
fi
"$VENV/bin/python" -c 'import tensorflow as tf, keras; print("[tf220] tensorflow", tf.__version__, "keras", keras.__version__)'

exec "$VENV/bin/python" -m pytest -n 2 --dist loadfile -p no:cacheprovider \
  tests/test_differential.py tests/test_execution.py tests/test_distribute.py \
  tests/test_data_sources.py tests/test_compile_outputs.py tests/test_static_shapes.py \
  tests/test_compat.py "$@"
