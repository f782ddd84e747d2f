#!/usr/bin/env bash
# Sets up the environment (tools/setup_env.sh), then trains an MLP on the real
# Fashion-MNIST with tfk_trainer (CPU is enough: a few minutes). Results go to
# $MODEL_DIR (default /tmp/tfk_fashion_mnist). Extra arguments go to the example,
# e.g.:  bash tools/main_job.sh --epochs=1
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash tools/setup_env.sh

exec .venv/bin/python examples/train_fashion_mnist.py \
  --model_dir="${MODEL_DIR:-/tmp/tfk_fashion_mnist}" "$@"
