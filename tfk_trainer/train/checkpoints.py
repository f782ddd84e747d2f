"""Checkpoints in `model_dir/checkpoints` and the "training done" marker.

Checkpoints are written by a `tf.train.CheckpointManager` (so the directory
has a `checkpoint` state file, `model.load_checkpoint(directory)` finds the
latest one, and old ones are pruned), numbered by optimizer step:
`checkpoints/ckpt-<step>`. They hold what `model.save_checkpoint` saves (the
network, its RNG state and the optimizer). The state file is updated only
after a checkpoint is complete, so a reader never sees a partial one.

`model_dir/TRAINING_DONE` (JSON: final checkpoint, step) is written by
training when it has finished; `continuous_evaluate` stops after it.

`model_dir/FIT_DONE` (JSON: the final checkpoint, step, history and fit
time) is written as soon as `fit` has ended and its final checkpoint is
saved, before the export and the test evaluation. A run preempted or
killed after it resumes from that checkpoint and does only the work after
`fit`: it never trains again. It is removed once TRAINING_DONE is written.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import tensorflow as tf

from tfk_trainer import checkpoint as checkpoint_lib
from tfk_trainer import distribute
from tfk_trainer.callbacks import Callback

DONE_MARKER = "TRAINING_DONE"
FIT_DONE_MARKER = "FIT_DONE"
_STEP = re.compile(r"ckpt-(\d+)$")


def step_of(path: str) -> int | None:
    """The optimizer step in a checkpoint prefix `.../ckpt-<step>`."""
    match = _STEP.search(path)
    return int(match.group(1)) if match else None


def latest(directory: str) -> str | None:
    """The prefix of the newest complete checkpoint in `directory`, or None."""
    if not tf.io.gfile.isdir(directory):
        return None
    return tf.train.latest_checkpoint(directory)


class CheckpointSaver(Callback):
    """Saves `ckpt-<step>` every epoch (`every_steps` 0) or every N optimizer steps
    (at execution boundaries); `save()` adds a final one. Chief-only writes,
    like the engine's own checkpoints."""

    def __init__(self, directory: str, every_steps: int = 0, max_to_keep: int = 5):
        super().__init__()
        self.directory = directory
        self.every_steps = int(every_steps)
        self.max_to_keep = int(max_to_keep)
        self._manager = None
        self._written = None
        self._last_step = -1
        self._since = 0
        self.initial_step = 0  # the optimizer step when fit began (after a backup restore)

    def _ensure_manager(self) -> tf.train.CheckpointManager:
        if self._manager is None:
            model = self.model
            self._written = checkpoint_lib.write_directory(
                self.directory, model.distribute_strategy
            )
            tf.io.gfile.makedirs(self._written)
            checkpoint = tf.train.Checkpoint(**checkpoint_lib.checkpoint_items(model))
            self._manager = tf.train.CheckpointManager(
                checkpoint, self._written, max_to_keep=self.max_to_keep, checkpoint_name="ckpt"
            )
            found = step_of(self._manager.latest_checkpoint or "")
            self._last_step = found if found is not None else -1
        return self._manager

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def save(self) -> str:
        """Saves at the current step unless that step is already saved; returns the prefix."""
        manager = self._ensure_manager()
        step = self._step()
        if step == self._last_step and manager.latest_checkpoint:
            return os.path.join(self.directory, os.path.basename(manager.latest_checkpoint))
        path = manager.save(
            checkpoint_number=step,
            options=distribute.checkpoint_options(
                self.model.distribute_strategy, manager.directory
            ),
        )
        self._last_step = step
        return os.path.join(self.directory, os.path.basename(path))

    def on_train_begin(self, logs=None):
        self._ensure_manager()
        self._since = self.initial_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps and self._step() - self._since >= self.every_steps:
            self.save()
            self._since = self._step()

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_steps:
            self.save()

    def close(self) -> None:
        if self._written is not None:
            checkpoint_lib.cleanup_worker_directory(self._written, self.directory)


def write_marker(model_dir: str, name: str, info: dict[str, Any], strategy: Any) -> None:
    """Writes the JSON marker `model_dir/<name>` (chief only), through tf.io.gfile
    (gs:// too): under a temporary name, then renamed into place, so a reader sees
    the whole marker or none."""
    if not distribute.is_chief(strategy):
        return
    path = os.path.join(model_dir, name)
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(info, indent=2))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_marker(model_dir: str, name: str) -> dict[str, Any] | None:
    """The marker's JSON; None when there is none, `{}` when it is unreadable."""
    path = os.path.join(model_dir, name)
    try:
        with tf.io.gfile.GFile(path) as f:
            text = f.read()
    except (tf.errors.NotFoundError, tf.errors.FailedPreconditionError):
        return None  # no marker (or no model_dir) yet
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def remove_marker(model_dir: str, name: str, strategy: Any) -> None:
    if distribute.is_chief(strategy):
        path = os.path.join(model_dir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def write_done_marker(model_dir: str, info: dict[str, Any], strategy: Any) -> None:
    """TRAINING_DONE: the run is finished (written last)."""
    write_marker(model_dir, DONE_MARKER, info, strategy)


def read_done_marker(model_dir: str) -> dict[str, Any] | None:
    return read_marker(model_dir, DONE_MARKER)


def remove_done_marker(model_dir: str, strategy: Any) -> None:
    remove_marker(model_dir, DONE_MARKER, strategy)
