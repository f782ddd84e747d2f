#!/usr/bin/env bash
# Prepares a machine to run tfk_trainer: the Fashion-MNIST data (Debian package
# dataset-fashion-mnist), a virtualenv in .venv and an editable install of the
# project with its test and config extras.
#
# Idempotent: each step is skipped when already done. The pip step is skipped when
# pyproject.toml has not changed since the last successful install (a stamp file in
# .venv records its hash); set TFK_FORCE_PIP=1 to reinstall anyway.
#
# Usage: bash tools/setup_env.sh [--tests]
#   --tests   hook for test-only setup (currently the same as no argument).
# Environment:
#   PYTHON                  interpreter used to create .venv (default: python3)
#   TFK_FASHION_MNIST_DIR   folder already holding the four Fashion-MNIST .gz files
#   TFK_FORCE_PIP=1         reinstall the package even if the stamp is current
set -euo pipefail

FOR_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) FOR_TESTS=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup_env.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
export FOR_TESTS  # Hook: nothing differs for tests yet.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { echo "[setup_env] $*"; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 1
  fi
}

# ---------------------------------------------------------------- Fashion-MNIST
FMNIST_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
              t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

has_fmnist() {  # $1: folder
  local f
  [ -n "$1" ] || return 1
  for f in "${FMNIST_FILES[@]}"; do
    [ -f "$1/$f" ] || return 1
  done
}

fmnist_instructions() {
  cat >&2 <<'MSG'
[setup_env] Fashion-MNIST was not found and could not be installed automatically.
[setup_env] To get it, either:
[setup_env]   * install the Debian package:  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist
[setup_env]     (puts the files in /usr/share/datasets/fashion-mnist), or
[setup_env]   * put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
[setup_env]     t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in one folder and
[setup_env]     export TFK_FASHION_MNIST_DIR=/that/folder
[setup_env] Continuing: tests that need the real data will be skipped and the main job will fail.
MSG
}

# Same rules as tfk_trainer.datasets.load_fashion_mnist: TFK_FASHION_MNIST_DIR, when
# set, is the only folder used; otherwise the Debian folder, then the Keras cache.
if [ -n "${TFK_FASHION_MNIST_DIR:-}" ]; then
  if has_fmnist "$TFK_FASHION_MNIST_DIR"; then
    log "Fashion-MNIST: present in TFK_FASHION_MNIST_DIR=$TFK_FASHION_MNIST_DIR."
  else
    echo "[setup_env] WARNING: TFK_FASHION_MNIST_DIR=$TFK_FASHION_MNIST_DIR does not hold the four" \
         "Fashion-MNIST .gz files, and the loader looks only there while it is set." >&2
  fi
elif has_fmnist /usr/share/datasets/fashion-mnist \
   || has_fmnist "$HOME/.keras/datasets/fashion-mnist"; then
  log "Fashion-MNIST: present."
elif command -v apt-get >/dev/null 2>&1; then
  log "Fashion-MNIST: installing Debian package dataset-fashion-mnist ..."
  if as_root apt-get update -qq \
     && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist \
     && has_fmnist /usr/share/datasets/fashion-mnist; then
    log "Fashion-MNIST: installed in /usr/share/datasets/fashion-mnist."
  else
    fmnist_instructions
  fi
else
  log "Fashion-MNIST: apt-get is not available on this machine."
  fmnist_instructions
fi

# ---------------------------------------------------------------- virtualenv
PYTHON="${PYTHON:-python3}"
VENV="$REPO_ROOT/.venv"

if [ ! -x "$VENV/bin/python" ]; then
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "[setup_env] '$PYTHON' not found; install Python >= 3.10 (e.g. apt-get install python3 python3-venv)." >&2
    exit 1
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "[setup_env] $("$PYTHON" --version 2>&1) is too old; tfk_trainer needs Python >= 3.10 (set PYTHON=...)." >&2
    exit 1
  fi
  # Debian splits venv/ensurepip into python3-venv; install it if it is missing.
  if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "python venv module missing; trying apt-get install python3-venv ..."
    as_root apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
      || { echo "[setup_env] could not install python3-venv; install it and rerun." >&2; exit 1; }
  fi
  log "creating $VENV with $("$PYTHON" --version 2>&1) ..."
  "$PYTHON" -m venv "$VENV"
else
  log "virtualenv: $VENV exists."
fi

# ---------------------------------------------------------------- package install
STAMP="$VENV/.tfk_trainer_install_stamp"
WANT_STAMP="$(cksum < pyproject.toml | cut -d' ' -f1)-test,config"
if [ "${TFK_FORCE_PIP:-0}" != "1" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ] \
   && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("tfk_trainer")' >/dev/null 2>&1; then
  log "package: installed and up to date (TFK_FORCE_PIP=1 to reinstall)."
else
  log "package: pip install -e '.[test,config]' (first time downloads TensorFlow; takes a few minutes) ..."
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,config]" --config-settings editable_mode=compat
  echo "$WANT_STAMP" > "$STAMP"
  log "package: installed."
fi
