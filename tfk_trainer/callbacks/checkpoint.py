"""`ModelCheckpoint` and `BackupAndRestore`: saving during `fit`, and exact resume.

`BackupAndRestore` saves, besides the network and optimizer, the metric
states and the training position (epoch, step in epoch, batches drawn and
the array shuffle seed). On restart `fit` restores all of it and continues
at that exact step: array epochs are pure functions of `(seed, epoch)`, so
skipping the batches already trained reproduces the rest of the epoch, and
a resumed run ends with the weights of an uninterrupted one (with op
determinism on). On SIGTERM (the preemption signal on Cloud) it saves at
the next execution boundary and raises `Preempted` (exit code 143); in a
multi-worker cluster a SIGTERM to any one worker makes every worker save
the same step and exit 143 (`tfk_trainer/preemption.py`).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer import checkpoint as checkpoint_lib
from tfk_trainer import distribute, paths
from tfk_trainer.callbacks import monitor as monitor_lib
from tfk_trainer.callbacks.base import Callback
from tfk_trainer.engine.run_state import Position
from tfk_trainer.preemption import PREEMPTED_EXIT_CODE, Preempted, PreemptionGuard

__all__ = ["PREEMPTED_EXIT_CODE", "BackupAndRestore", "ModelCheckpoint", "Preempted"]

log = logging.getLogger("tfk_trainer")


def _check_save_freq(save_freq: Any) -> Any:
    if save_freq == "epoch":
        return save_freq
    if isinstance(save_freq, bool) or not isinstance(save_freq, (int, np.integer)) or save_freq < 1:
        raise ValueError(
            f'`save_freq` must be "epoch" or a positive int (steps); received {save_freq!r}.'
        )
    return int(save_freq)


class BackupAndRestore(Callback):
    """Backs training up and resumes it, exactly, after a crash or preemption.

    On SIGTERM every worker of the cluster saves the same step and `fit`
    raises `Preempted` (exit status 143); see `tfk_trainer/preemption.py`.

    Args:
        backup_dir: where the backup lives (only the chief writes there).
        save_freq: "epoch", or an int: save every that many optimizer steps
            (rounded up to execution boundaries).
        delete_checkpoint: delete the backup when `fit` completes.
        save_before_preemption: tf-keras's name for saving on SIGTERM; accepted
            for compatibility. Saving on SIGTERM is always on (Keras 3 has no
            such argument), so only True is accepted.
    """

    def __init__(
        self,
        backup_dir: str,
        save_freq: Any = "epoch",
        delete_checkpoint: bool = True,
        save_before_preemption: bool = True,
    ):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise ValueError(f"`backup_dir` must be a non-empty path; received {backup_dir!r}.")
        if save_before_preemption is not True:
            raise ValueError(
                "`save_before_preemption` must be True: BackupAndRestore always saves and exits "
                "(status 143) on SIGTERM, the preemption signal, on every worker of a cluster; "
                f"received {save_before_preemption!r}."
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = _check_save_freq(save_freq)
        self.delete_checkpoint = bool(delete_checkpoint)
        self.save_before_preemption = True
        self._manager = None
        self._position_vars: dict[str, tf.Variable] = {}
        self._last_saved_step = 0
        self._saved_at: tuple | None = None  # (optimizer step, epoch, step) of the last save
        self._guard: PreemptionGuard | None = None

    # -- setup -----------------------------------------------------------

    def _state(self) -> Any:
        """The run's RunState (position, resume point), set by the CallbackList."""
        if self.run_state is None:
            raise RuntimeError(
                "BackupAndRestore works only inside tfk_trainer's `Model.fit` (it needs the "
                "run's training position); received no run state."
            )
        return self.run_state

    def _checkpoint(self) -> tf.train.Checkpoint:
        model = self.model
        with tf.init_scope():
            self._position_vars = {
                name: tf.Variable(0, dtype=tf.int64, trainable=False, name=f"position_{name}")
                for name in ("epoch", "step", "consumed", "first_epoch", "data_seed", "has_seed")
            }
        items = checkpoint_lib.checkpoint_items(model)
        # Keras metrics keep their variables out of TF's object graph: list them.
        items["metric_variables"] = [v for m in model.metrics for v in m.variables]
        items["position"] = self._position_vars
        return tf.train.Checkpoint(**items)

    def on_train_begin(self, logs=None):
        model = self.model
        checkpoint = self._checkpoint()
        self._written_dir = checkpoint_lib.write_directory(
            self.backup_dir, model.distribute_strategy
        )
        paths.make_dirs(
            self._written_dir, "backup_dir", path=self.backup_dir, owner="BackupAndRestore"
        )
        self._restore(checkpoint)
        self._manager = tf.train.CheckpointManager(checkpoint, self._written_dir, max_to_keep=2)
        self._last_saved_step = int(model.optimizer.iterations.numpy())
        self._saved_at = None
        # The guard owns SIGTERM; the driver asks it at every execution boundary,
        # where a cluster agrees on it (one all-reduce) and every worker saves.
        self._guard = PreemptionGuard(model.distribute_strategy, self._save_and_exit)
        self._state().preemption = self._guard
        self._guard.install()

    def _restore(self, checkpoint: tf.train.Checkpoint) -> None:
        """Restores the newest intact backup, if any, and sets the resume point.

        Damaged newer backups are skipped with a warning naming their files
        (and the state file is pointed at the one restored, so the backups
        that follow continue from it); when backups exist but none can be
        read, the error names the directory. Nothing is deleted.
        """
        model = self.model

        def restore(prefix: str) -> None:
            checkpoint_lib.prepare_for_restore(model)
            checkpoint_lib.read(
                checkpoint,
                prefix,
                subject=f"The backup in {self.backup_dir!r}",
                mismatch=(
                    "was written by a different model or configuration and cannot be restored "
                    f"(from {paths.basename(prefix)!r})"
                ),
                advice=". Use another `backup_dir`, or delete this one to start over.",
                strategy=model.distribute_strategy,
            )

        directory = self.backup_dir
        newest = _state_latest(directory)
        restored = checkpoint_lib.restore_newest_intact(directory, restore, what="BackupAndRestore")
        if restored is None:
            return
        if restored != newest and distribute.is_chief(model.distribute_strategy):
            checkpoint_lib.write_state(directory, restored)
        p = {k: int(v.numpy()) for k, v in self._position_vars.items()}
        self._state().resume_from = Position(
            epoch=p["epoch"],
            step=p["step"],
            consumed=p["consumed"],
            first_epoch=p["first_epoch"],
            data_seed=p["data_seed"] if p["has_seed"] else None,
        )
        log.info("BackupAndRestore: resuming at epoch %d, step %d.", p["epoch"], p["step"])

    def _release_guard(self) -> None:
        """Puts the SIGTERM handler back (a SIGTERM not yet acted on goes to it)."""
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.uninstall()

    # -- saving ----------------------------------------------------------

    def _save(self) -> None:
        position = self._state().position
        values = {
            "epoch": position.epoch,
            "step": position.step,
            "consumed": position.consumed,
            "first_epoch": position.first_epoch,
            "data_seed": position.data_seed or 0,
            "has_seed": int(position.data_seed is not None),
        }
        for name, value in values.items():
            self._position_vars[name].assign(value)
        iterations = int(self.model.optimizer.iterations.numpy())
        self._manager.save(
            checkpoint_number=iterations,
            options=distribute.checkpoint_options(
                self.model.distribute_strategy, self._manager.directory
            ),
        )
        self._last_saved_step = iterations
        self._saved_at = (iterations, position.epoch, position.step)

    def _save_and_exit(self, signalled: bool) -> None:
        """The guard's action, on every worker at the same boundary: save, then exit 143.

        A backup already written at this very position (the epoch-end save just
        before) is not written again. The non-chief workers' scratch directory
        is removed as at the end of `fit`.
        """
        position = self._state().position
        iterations = int(self.model.optimizer.iterations.numpy())
        if self._saved_at != (iterations, position.epoch, position.step):
            self._save()
        checkpoint_lib.cleanup_worker_directory(self._written_dir, self.backup_dir)
        who = "SIGTERM received" if signalled else "another worker of the cluster received SIGTERM"
        raise Preempted(
            f"{who}: backup saved to {self.backup_dir!r} at epoch {position.epoch}, step "
            f"{position.step} (optimizer step {iterations}); rerun the same command to resume."
        )

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(self.save_freq, int):
            step = int(self.model.optimizer.iterations.numpy())
            if step - self._last_saved_step >= self.save_freq:
                self._save()

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save()

    def _on_train_abort(self) -> None:
        self._release_guard()

    def on_train_end(self, logs=None):
        self._release_guard()
        checkpoint_lib.cleanup_worker_directory(self._written_dir, self.backup_dir)
        if self.delete_checkpoint and distribute.is_chief(self.model.distribute_strategy):
            _remove_backup(self.backup_dir)


class ModelCheckpoint(Callback):
    """Saves the model (or its weights) during `fit`, Keras's arguments.

    `filepath` may hold `{epoch}` and metric fields (`{val_loss:.2f}`). A
    path ending in `.weights.h5` (Keras network weights) or `.keras` (a full
    Keras model) is saved by Keras; any other path is a TensorFlow
    checkpoint prefix holding the network and, unless `save_weights_only`,
    the optimizer, restorable with `model.load_checkpoint(path)`.

    Args:
        filepath: Where to save: a path that may hold `{epoch}` and log
            fields such as `{val_loss:.2f}` (a field naming a missing log key
            raises a `KeyError`). Local or `gs://`.
        monitor: The log key compared for `save_best_only`
            (e.g. `"val_loss"`, `"val_accuracy"`).
        verbose: 0 (silent) or 1 (a line per save).
        save_best_only: Save only when `monitor` improves on the best value
            so far (a missing key: a logged warning, no save).
        save_weights_only: Save the network only (no optimizer state).
        mode: `"auto"`, `"min"` or `"max"`: whether a lower or higher
            `monitor` is better; `"auto"`: from the metric object or the
            name, as `EarlyStopping` does (`callbacks/monitor.py`).
        save_freq: `"epoch"` (at each epoch end) or an int: every that many
            optimizer steps (rounded up to execution boundaries).
        initial_value_threshold: Optional float: the value `monitor` must
            beat for the first save with `save_best_only`.
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: Any = "epoch",
        initial_value_threshold: float | None = None,
    ):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)) or not str(filepath):
            raise ValueError(f"`filepath` must be a non-empty path; received {filepath!r}.")
        if mode not in monitor_lib.MODES:
            raise ValueError(f'`mode` must be "auto", "min" or "max"; received {mode!r}.')
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.save_freq = _check_save_freq(save_freq)
        # "auto" is resolved when the first value is compared, once the
        # model's metric objects exist (callbacks/monitor.py, the rule every
        # monitor callback follows).
        self.mode = mode
        self.best = initial_value_threshold
        self._last_saved_step = 0
        self._epoch = 0

    def _improved(self, value: float) -> bool:
        if self.mode == "auto":
            self.mode = monitor_lib.resolve_mode(
                self.mode, str(self.monitor), self.model, "ModelCheckpoint"
            )
        if self.best is None:
            self.best = math.inf if self.mode == "min" else -math.inf
        return value < self.best if self.mode == "min" else value > self.best

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **(logs or {}))
        except KeyError as e:
            raise KeyError(
                f"`filepath` {self.filepath!r} names {e}, which is not in the logs "
                f"{sorted(logs or {})}."
            ) from e

    def _save(self, epoch: int, logs: dict) -> None:
        logs = dict(logs or {})
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                log.warning(
                    "ModelCheckpoint: `monitor` %r is not in the logs %s; not saving.",
                    self.monitor,
                    sorted(logs),
                )
                return
            if not self._improved(float(value)):
                return
            self.best = float(value)
        path = self._path(epoch, logs)
        model = self.model
        directory = paths.parent(path)
        if distribute.is_chief(model.distribute_strategy):
            paths.make_dirs(directory, "filepath", path=path, owner="ModelCheckpoint")
        if path.endswith(".weights.h5") or path.endswith(".keras"):
            if distribute.is_chief(model.distribute_strategy):
                _keras_save(
                    model, path, weights_only=path.endswith(".weights.h5") or self.save_weights_only
                )
        else:
            checkpoint_lib.save(model, path, include_optimizer=not self.save_weights_only)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: saved the model to {path}")

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(self.save_freq, int):
            step = int(self.model.optimizer.iterations.numpy())
            if step - self._last_saved_step >= self.save_freq:
                self._last_saved_step = step
                self._save(self._epoch, dict(logs or {}))

    def on_train_begin(self, logs=None):
        # issue 19 (13): `save_freq` counts this fit's batches, as Keras does,
        # not the optimizer's steps of earlier fits.
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            self._last_saved_step = int(optimizer.iterations.numpy())
        # Fail before the first epoch is trained, not at its end. Creates
        # nothing: with save_best_only a checkpoint may never be written.
        if distribute.is_chief(self.model.distribute_strategy):
            paths.check_creatable(
                _fixed_directory(self.filepath),
                "filepath",
                path=self.filepath,
                owner="ModelCheckpoint",
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs)


def _state_latest(directory: str) -> str | None:
    """The backup the state file names as current (None: no readable state file)."""
    try:
        listed = checkpoint_lib.read_state(paths.join(directory, checkpoint_lib.STATE_FILE))
    except Exception:  # noqa: BLE001 - unreadable: reported by the restore itself
        return None
    return listed[-1] if listed else None


def _remove_backup(directory: str) -> None:
    """Deletes a finished run's backup (through `tf.io.gfile`, so gs:// too).

    A backup left behind would make the next `fit` with this `backup_dir`
    resume at the end and train nothing, so a failure is not swallowed: it
    is reported as a warning naming the directory.
    """
    try:
        checkpoint_lib.remove_tree(directory)
    except (tf.errors.OpError, OSError) as e:
        message = (
            f"BackupAndRestore: the finished run's backup {directory!r} could not be deleted "
            f"({e}); the next fit() with this backup_dir would resume at its end. Delete it "
            "before training again."
        )
        log.warning(message)
        warnings.warn(message, stacklevel=2)


def _fixed_directory(filepath: str) -> str:
    """The directory of `filepath` up to its first formatted part: for
    "runs/{epoch}/ckpt" it is "runs", the part known before any epoch ends."""
    directory = paths.parent(filepath)
    while "{" in directory or "}" in directory:
        directory = paths.parent(directory)
    return directory


def _keras_save(model: Any, path: str, weights_only: bool) -> None:
    """Keras-format saving: written whole under a unique temporary name, then renamed
    over `path` through `tf.io.gfile` (a local rename is atomic; on object stores
    the file is one object, copied whole, so a reader sees the old or the new
    file, never a mix)."""
    suffix = ".weights.h5" if path.endswith(".weights.h5") else ".keras"
    tmp = f"{path[: -len(suffix)]}.tmp-{uuid.uuid4().hex[:12]}{suffix}"
    # Model.save/save_weights: Keras's files, with the optimizer's state and the
    # compile() arguments when the network is a Keras model (see model_surface).
    if weights_only:
        if suffix == ".keras":
            raise ValueError(
                f"`filepath` {path!r} ends in .keras, but `save_weights_only=True` writes "
                "weights: end it in .weights.h5."
            )
        model.save_weights(tmp)
    else:
        model.save(tmp)
    try:
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
