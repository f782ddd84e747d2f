#!/usr/bin/env bash
# The GPU proof in one command (issue 18): the tests that matter on GPUs, then the
# GPU rows of tools/benchmark.py. Run it on a machine with one or more GPUs:
#
#   bash tools/gpu_check.sh                 # tests + benchmark (results in $OUT_DIR)
#   GPU_CHECK_BENCH=0 bash tools/gpu_check.sh   # tests only
#
# Without a GPU it says so and exits 2 (nothing here is meaningful on CPUs; a dry run
# of tools/gpu_checks.py on two logical CPUs: TFK_GPU_CHECKS_ON_CPU=1 python -m pytest tools/gpu_checks.py).
# Environment: PYTHON (default .venv/bin/python, else python3), OUT_DIR (default
# /tmp/tfk_gpu_check), GPU_CHECK_ROUNDS (benchmark rounds, default 3).
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT_DIR="${OUT_DIR:-/tmp/tfk_gpu_check}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

gpus="$("$PYTHON" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null)"
if [[ -z "$gpus" || "$gpus" == "0" ]]; then
  echo "gpu_check: NO GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)."
  echo "gpu_check: nothing was run; GPU numbers are still missing (docs/benchmarks.md)."
  exit 2
fi
echo "gpu_check: $gpus GPU(s) visible; results in $OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpus.csv" 2>/dev/null || true
"$PYTHON" -c 'import tensorflow as tf, keras; print("TF", tf.__version__, "Keras", keras.__version__)' | tee "$OUT_DIR/versions.txt"

status=0
# 1. The GPU checks proper (tools/gpu_checks.py: real GPUs, no logical CPUs).
"$PYTHON" -m pytest -q -p no:cacheprovider tools/gpu_checks.py \
  --junitxml="$OUT_DIR/gpu_checks.xml" 2>&1 | tee "$OUT_DIR/gpu_checks.log" || status=1
# 2. The replica and predict-order tests (logical CPUs, as on CI): must still pass here.
tests=(tests/test_replicas.py)
[[ -f tests/test_predict_order.py ]] && tests+=(tests/test_predict_order.py)
"$PYTHON" -m pytest -q -p no:cacheprovider "${tests[@]}" \
  --junitxml="$OUT_DIR/tests.xml" 2>&1 | tee "$OUT_DIR/tests.log" || status=1
# 3. The GPU rows of the benchmark.
if [[ "${GPU_CHECK_BENCH:-1}" != "0" ]]; then
  "$PYTHON" tools/benchmark.py --gpu --memory=none --rounds="${GPU_CHECK_ROUNDS:-3}" \
    --output="$OUT_DIR/benchmark_gpu.md" 2>&1 | tee "$OUT_DIR/benchmark.log" || status=1
fi
if [[ $status -eq 0 ]]; then
  echo "gpu_check: PASSED. Put $OUT_DIR/benchmark_gpu.md into docs/benchmarks.md (GPU section)."
else
  echo "gpu_check: FAILED (see the logs in $OUT_DIR)."
fi
exit $status
