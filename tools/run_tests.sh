#!/usr/bin/env bash
# Sets up the environment (tools/setup_env.sh), then runs the test suite on two
# workers and ruff. Extra arguments go to pytest, e.g.:
#   bash tools/run_tests.sh -k fashion_mnist -x
# Exits non-zero if either pytest or ruff fails (both always run).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash tools/setup_env.sh --tests

status=0
.venv/bin/python -m pytest -n 2 --dist loadfile tests "$@" || status=$?
.venv/bin/ruff check tfk_trainer tests tools examples || status=$?
exit "$status"
