#!/usr/bin/env bash
# Sets up the environment (tools/setup_env.sh), then runs the training binary
# (tfk-train) on the main job's config: an MLP on the real Fashion-MNIST, on CPU
# (about a minute). Results go to $MODEL_DIR (default /tmp/tfk_fashion_mnist):
# summary.json, checkpoints/, export/ (SavedModel), logs/ (TensorBoard).
# Exits non-zero if the test accuracy is below 0.85. Extra arguments go to
# tfk-train, e.g.:  bash tools/main_job.sh --config.train.epochs=1
# Rerunning the same command resumes an interrupted run from model_dir/backup.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash tools/setup_env.sh

exec .venv/bin/tfk-train --config=configs/fashion_mnist_mlp.py \
  --model_dir="${MODEL_DIR:-/tmp/tfk_fashion_mnist}" "$@"
