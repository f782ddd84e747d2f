"""Quiets TensorFlow's start-up lines for the `tfk-train` binary.

On a machine without a GPU, importing TensorFlow and enumerating devices
prints lines such as "Could not find cuda drivers on your machine" and
"failed call to cuInit: ... (303)". They are harmless but they are the first
thing a user of the binary sees. Two of TensorFlow's own knobs do not reach
them all: `TF_CPP_MIN_LOG_LEVEL` filters TensorFlow's C++ logging, but the
lines written before absl's logging is initialised ignore it.

So the binary, unless the user set `TF_CPP_MIN_LOG_LEVEL` (then nothing here
runs and every line shows, as TensorFlow prints it):

* sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ INFO and WARNING lines hidden, errors kept);
* imports TensorFlow and enumerates the physical devices (where the CUDA
  probe runs) with file descriptor 2 pointed at a temporary file, then
  writes every captured line back to stderr except the known start-up
  lines in `_STARTUP_NOISE`.

This module imports nothing from TensorFlow or tfk_trainer at module level, so
it can run before the first TensorFlow import: `tools/train.py` loads it by
path, and `tfk_trainer/__init__.py` calls `quiet_for_binary()` first thing
(which acts only when the program is the `tfk-train` console script or
`python -m tfk_trainer.train.main`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"
BINARY_NAMES = ("tfk-train",)
MAIN_MODULE = "tfk_trainer.train.main"

# The lines TensorFlow prints at import and at the first device enumeration on a
# machine without CUDA (or with oneDNN on): informational, nothing to act on.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|cuda_platform\.cc.*failed call to cuInit"
    r"|port\.cc.*oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc.*This TensorFlow binary is optimized"
    r"|To enable the following instructions: .*rebuild TensorFlow"
)


def is_startup_noise(line: str) -> bool:
    """True for one of TensorFlow's known start-up lines (see `_STARTUP_NOISE`)."""
    return bool(_STARTUP_NOISE.search(line))


def quiet_tensorflow_startup() -> bool:
    """Imports TensorFlow with its start-up lines filtered out; returns whether it did.

    Does nothing (returns False) when the user set `TF_CPP_MIN_LOG_LEVEL`
    (their choice wins, every line shows) or TensorFlow is already imported
    (too late to filter). Lines that are not start-up noise are written back
    to stderr in order, so a real error at import is never hidden.
    """
    if ENV_VAR in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ENV_VAR] = DEFAULT_LEVEL
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        return False
    # A temporary file of our own, not a user path: it only holds the captured lines.
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe prints here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not is_startup_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return True


def _is_the_binary() -> bool:
    """The `tfk-train` console script, or `python -m tfk_trainer.train.main`
    (while `-m` imports the package, `sys.argv[0]` is "-m": `orig_argv` tells)."""
    argv = getattr(sys, "argv", None) or [""]
    if os.path.basename(argv[0]) in BINARY_NAMES:
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return "-m" in orig and orig[orig.index("-m") + 1 : orig.index("-m") + 2] == [MAIN_MODULE]


def quiet_for_binary() -> bool:
    """`quiet_tensorflow_startup()` when this process is the training binary, else
    nothing: importing tfk_trainer as a library changes no logging."""
    if not _is_the_binary():
        return False
    return quiet_tensorflow_startup()
