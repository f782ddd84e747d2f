#!/usr/bin/env bash
# Runs the test suite through Bazel (an optional second entry point; pytest through
# tools/run_tests.sh stays the primary one).
#
# 1. Installs Bazel when `bazel` is missing: Debian's offline bazel-bootstrap 4.2.3
#    and bazel-rules-java (apt-get; needs root or sudo).
# 2. Sets up .venv and the data (tools/setup_env.sh --tests). The Python toolchain
#    in tools/python runs every test on <repo>/.venv/bin/python; nothing to write.
# 3. Runs `bazel test //...`: the fast test modules (slow ones are tagged "slow").
#
# Usage: bash tools/bazel_test.sh [bazel test args...]
#   bash tools/bazel_test.sh                         # fast modules
#   bash tools/bazel_test.sh --config=all            # every module (slow ones too)
#   bash tools/bazel_test.sh //tests:test_weights    # given targets instead of //...
#   bash tools/bazel_test.sh -- //... -//tests:test_callbacks   # all but one
# Exit status is Bazel's: 0 all tests passed, 3 a test failed, others: build errors.
# Environment: BAZEL (default: bazel) is the Bazel command to run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { echo "[bazel_test] $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "[bazel_test] need root (or sudo) to run: $*" >&2
    return 1
  fi
}

BAZEL="${BAZEL:-bazel}"
RULES_JAVA=/usr/share/bazel/rules/java  # WORKSPACE: local_repository rules_java

# ---------------------------------------------------------------- Bazel
missing=()
command -v "$BAZEL" >/dev/null 2>&1 || missing+=(bazel-bootstrap)
[ -f "$RULES_JAVA/WORKSPACE" ] || missing+=(bazel-rules-java)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[bazel_test] missing ${missing[*]} and apt-get is not available." \
         "This setup needs Debian's bazel-bootstrap (4.2.3) and bazel-rules-java." >&2
    exit 1
  fi
  log "installing ${missing[*]} (apt-get) ..."
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    bazel-bootstrap bazel-rules-java
fi
command -v "$BAZEL" >/dev/null 2>&1 || { echo "[bazel_test] '$BAZEL' not found." >&2; exit 1; }

# ---------------------------------------------------------------- Python env
bash tools/setup_env.sh --tests

# ---------------------------------------------------------------- tests
# Arguments: target patterns (//..., :name, @repo//...) and Bazel flags; everything
# after "--" is a target pattern (negative ones too: -- //... -//tests:test_soak).
targets=()
flags=()
after_dashes=0
for arg in "$@"; do
  if [ "$after_dashes" -eq 1 ]; then
    targets+=("$arg")
    continue
  fi
  case "$arg" in
    --) after_dashes=1 ;;
    //*|:*|@*) targets+=("$arg") ;;
    *) flags+=("$arg") ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(//...)

log "$BAZEL test ${flags[*]} ${targets[*]}"
status=0
"$BAZEL" test "${flags[@]}" -- "${targets[@]}" || status=$?
case "$status" in
  0) log "all tests passed." ;;
  3) log "some tests FAILED (logs: bazel-testlogs/tests/<target>/test.log)." ;;
  4) log "no test targets matched (exit 4)." ;;
  *) log "bazel failed with exit status $status (build or configuration error)." ;;
esac
exit "$status"
