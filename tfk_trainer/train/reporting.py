"""The binary's exit statuses and the summary every mode prints (and the PASSED/FAILED line).

Each outcome has its own exit status, so automation can tell a model that
trained but missed its quality gate (retrain with other settings) from a
crash (look at the traceback), a bad command line (fix it), a busy
`model_dir` (another trainer holds its lease) and a preemption (rerun the
same command). docs/binary.md lists them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import keras
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer.train import summary as summary_lib

EXIT_OK = 0
EXIT_CRASH = 1  # an uncaught exception (Python's own status for it)
EXIT_USAGE = 2  # bad flags or config, reported before anything runs
EXIT_BELOW_BAR = 3  # the run finished but the test accuracy is below eval.min_accuracy
EXIT_NO_CHECKPOINT = 4  # continuous_evaluate: no new checkpoint within eval.continuous_timeout
EXIT_LOCKED = 5  # model_dir is leased by another live trainer (train modes)
EXIT_PREEMPTED = 143  # SIGTERM (128 + 15): what was done is saved; rerun the same command


def _check_bar(config: Any, results: dict[str, Any] | None) -> tuple[int, str | None]:
    """`(exit status, PASSED/FAILED line)` for eval.min_accuracy (no line when it is 0)."""
    bar = config.eval.min_accuracy
    if not bar or results is None:
        return EXIT_OK, None
    accuracy = summary_lib.accuracy_of(results)
    if accuracy is None:
        return (
            EXIT_BELOW_BAR,
            f"FAILED: eval.min_accuracy is {bar} but the results have no accuracy",
        )
    if accuracy < bar:
        return (
            EXIT_BELOW_BAR,
            f"FAILED: test accuracy {accuracy:.4f} is below eval.min_accuracy {bar:.4f}",
        )
    return EXIT_OK, f"PASSED: test accuracy {accuracy:.4f} >= eval.min_accuracy {bar:.4f}"


def _finish(summary: dict[str, Any], status_line: str | None) -> None:
    summary_lib.print_summary(summary)
    if status_line:
        print(status_line, file=sys.stderr if status_line.startswith("FAILED") else sys.stdout)
        sys.stdout.flush()


def _base_summary(config: Any, mode: str, model_dir: str, strategy: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "model": config.model.name,
        "data": config.data.name,
        # A URL (gs://...) as given: abspath would glue it onto the working directory.
        "model_dir": model_dir if "://" in model_dir else os.path.abspath(model_dir),
        "strategy": config.runtime.strategy,
        "replicas": tfk.distribute.num_replicas(strategy),
        "mixed_precision": config.runtime.mixed_precision,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
