"""What `tfk-train` writes to TensorBoard besides the `TensorBoard` callback's runs.

`model_dir/logs` holds one run per source, all on one x axis, the optimizer
step (Model Garden/Orbit's axis; the callback writes epoch scalars there with
`epoch_axis="step"`):

    logs/             HParams: the resolved config, one hparam per key ("train.learning_rate")
    logs/train/       epoch_* at the step that ends each epoch, batch_* every N steps
    logs/validation/  epoch_* of the validation data, at the same steps as train/
    logs/eval/        epoch_* of the test split: each checkpoint continuous_evaluate
                      reads (at the checkpoint's step), and the final evaluation of
                      train_and_evaluate (at the final step)

The test-split tags are named like the epoch tags (`epoch_loss`,
`epoch_accuracy`), so TensorBoard draws the train, validation and test curves
of a metric in one chart. Writers go through `tf.summary` (any file system,
`gs://` included); only the chief calls these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfk_trainer.train.config import flatten

EVAL_RUN = "eval"
TAG_PREFIX = "epoch_"


def hparam_values(config: Any) -> dict[str, bool | int | float | str]:
    """The flattened config as HParams values: bools, numbers and strings as they
    are, anything else (tuples, None) as its Python literal (a string)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in flatten(config).items():
        out[key] = value if isinstance(value, (bool, int, float, str)) else repr(value)
    return out


def write_hparams(log_dir: str, config: Any) -> None:
    """Logs the resolved config as HParams in `log_dir`, so runs can be compared in
    TensorBoard's HParams tab (their metrics are the scalars of the runs below it)."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hp.hparams(hparam_values(config))
    writer.close()


def evaluation_writer(log_dir: str) -> Any:
    """The summary writer of the test-split run, `log_dir/eval`."""
    return tf.summary.create_file_writer(os.path.join(log_dir, EVAL_RUN))


def write_evaluation(writer: Any, results: Mapping[str, Any], step: int) -> None:
    """Writes one test-split evaluation at optimizer step `step` (and flushes it, so a
    running TensorBoard shows it now)."""
    with writer.as_default(), tf.summary.record_if(True):
        for name, value in results.items():
            tf.summary.scalar(TAG_PREFIX + name, float(value), step=step)
    writer.flush()
