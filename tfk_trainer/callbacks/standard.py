"""Keras's standard callbacks, written for our engine.

`EarlyStopping`, `ReduceLROnPlateau`, `LearningRateScheduler`, `CSVLogger`,
`TerminateOnNaN` and `LambdaCallback` take Keras 3's constructor arguments
and follow its semantics (the stopping epoch, the learning rates, the CSV
text and the restored weights equal a Keras-trained model's with Keras's own
classes). Differences are deliberate and confined to failing earlier and
more clearly:

* constructor arguments are validated (`patience < 0`, `factor >= 1`, an
  unknown `mode`, ... raise `ValueError`/`TypeError` naming the argument;
  Keras warns and falls back to "auto" for an unknown mode);
* a learning rate that is a `LearningRateSchedule` cannot be set, so
  `LearningRateScheduler` and `ReduceLROnPlateau` raise a `TypeError` at
  `on_train_begin` instead of at the first epoch that would set it;
* `mode="auto"` resolves the direction from the metric object (Keras's rule)
  and otherwise from the name ("acc", "auc", "precision", ... maximise;
  "loss", "error", "mse", ... minimise) before giving up: the one rule in
  `callbacks/monitor.py`, which `ModelCheckpoint` and Keras's own monitor
  callbacks follow too;
* `LearningRateScheduler` decides between `schedule(epoch, lr)` and
  `schedule(epoch)` from the signature, so a `TypeError` raised inside a
  schedule is not mistaken for the one-argument form.

Only `TerminateOnNaN` and the hooks given to `LambdaCallback` are batch-level
readers: the others never cause a per-execution read of the logs.
"""

from __future__ import annotations

import collections.abc
import csv
import inspect
import numbers
import os
import warnings
from typing import Any

import keras
import numpy as np

from tfk_trainer import compat, paths
from tfk_trainer.callbacks import monitor as monitor_lib
from tfk_trainer.callbacks.base import Callback
from tfk_trainer.engine.checks import check_int

# -- argument checks ---------------------------------------------------------


def _check_str(value: Any, name: str, owner: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{owner}: `{name}` must be a non-empty string; received {name}={value!r}.")
    return value


def _check_real(value: Any, name: str, owner: str, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        expected = "a number or None" if allow_none else "a number"
        raise TypeError(f"{owner}: `{name}` must be {expected}; received {name}={value!r}.")
    if not np.isfinite(value):
        raise ValueError(f"{owner}: `{name}` must be finite; received {name}={value!r}.")
    return value


def _check_verbose(value: Any, owner: str) -> int:
    if not isinstance(value, (int, np.integer)):  # bools are ints, as in Keras
        raise TypeError(f"{owner}: `verbose` must be an int (0 or 1); received verbose={value!r}.")
    return int(value)


def _check_mode(mode: Any, owner: str) -> str:
    if mode not in monitor_lib.MODES:
        raise ValueError(
            f'{owner}: `mode` must be one of "auto", "min", "max"; received mode={mode!r}.'
        )
    return mode


# -- monitored quantities ----------------------------------------------------


class _MonitorCallback(Callback):
    """A monitored log key, its direction (`mode`) and `min_delta`, as Keras's.

    Comparisons are made in float32, as Keras's `ops.less`/`ops.greater` on
    Python floats are, so ties and near-ties resolve the same way.
    """

    def __init__(self, monitor: str, mode: str, min_delta: Any, owner: str):
        super().__init__()
        self.monitor = _check_str(monitor, "monitor", owner)
        self.mode = _check_mode(mode, owner)
        self.min_delta = abs(_check_real(min_delta, "min_delta", owner))
        self.monitor_op = None  # np.less or np.greater once resolved
        self.best = None

    def _set_monitor_op(self) -> None:
        mode = monitor_lib.resolve_mode(self.mode, self.monitor, self.model, type(self).__name__)
        self.monitor_op = np.greater if mode == "max" else np.less

    def _is_improvement(self, value: Any, reference: Any) -> bool:
        if reference is None:
            return True
        delta = self.min_delta if self.monitor_op is np.greater else -self.min_delta
        return bool(self.monitor_op(np.float32(value - delta), np.float32(reference)))


def _missing_key_warning(what: str, monitor: str, logs: Any) -> None:
    available = ",".join(list((logs or {}).keys()))
    warnings.warn(
        f"{what} conditioned on metric `{monitor}` which is not available. "
        f"Available metrics are: {available}",
        stacklevel=3,
    )


# -- learning rates ------------------------------------------------------------


def _optimizers(model: Any) -> list[tuple[str | None, Any]]:
    """(name or None, optimizer): the optimizers whose learning rate is managed."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "The model has no optimizer: call `compile()` before training with a callback "
            "that manages the learning rate."
        )
    if hasattr(optimizer, "optimizers"):
        return [(opt.name, opt) for opt in optimizer.optimizers]
    return [(None, optimizer)]


def _read_lr(optimizer: Any) -> float:
    if not hasattr(optimizer, "learning_rate"):
        raise ValueError('Optimizer must have a "learning_rate" attribute.')
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def _check_lr_settable(optimizer: Any, owner: str) -> None:
    if not hasattr(optimizer, "learning_rate"):
        raise ValueError(f'{owner}: the optimizer must have a "learning_rate" attribute.')
    inner = optimizer
    while hasattr(inner, "inner_optimizer"):  # LossScaleOptimizer
        inner = inner.inner_optimizer
    lr = compat.optimizer_learning_rate(inner)
    if lr is None or isinstance(lr, keras.Variable) or hasattr(lr, "assign"):
        return
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) or callable(lr):
        raise TypeError(
            f"{owner} sets the optimizer's learning rate, but this optimizer was created with "
            f"a {type(lr).__name__} (a schedule) as its `learning_rate`, which is not "
            "settable. Create the optimizer with a float `learning_rate`, or drop the "
            f"{owner} callback and let the schedule decide the learning rate."
        )


def _log_lrs(model: Any, logs: Any) -> None:
    if logs is None:
        return
    for name, optimizer in _optimizers(model):
        key = f"learning_rate_{name}" if name is not None else "learning_rate"
        logs[key] = _read_lr(optimizer)


# -- EarlyStopping -------------------------------------------------------------


class EarlyStopping(_MonitorCallback):
    """Stops training when a monitored quantity has stopped improving.

    Same arguments and behaviour as `keras.callbacks.EarlyStopping`: each
    epoch at or after `start_from_epoch` with the monitored key present
    counts towards `patience` unless it improves on the best value by more
    than `min_delta` (and, when `baseline` is given, on the baseline too).
    With `restore_best_weights`, the weights of the best epoch are restored
    when training ends, whether or not it stopped early.

    Args:
        monitor: The log key to monitor (e.g. `"val_loss"`).
        min_delta: Minimum change that counts as an improvement.
        patience: Number of epochs without improvement after which
            training stops.
        verbose: 0 (silent) or 1 (a line when it stops or restores).
        mode: `"auto"`, `"min"` or `"max"`: whether lower or higher is
            better; `"auto"` infers it from the name.
        baseline: Optional value the monitored quantity must beat; training
            stops if it does not within `patience` epochs.
        restore_best_weights: Restore the weights of the best epoch when
            training ends.
        start_from_epoch: Number of epochs to wait before counting towards
            `patience` (a warm-up).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        owner = "EarlyStopping"
        super().__init__(monitor, mode, min_delta, owner)
        self.patience = check_int(patience, "patience", owner=owner)
        self.verbose = _check_verbose(verbose, owner)
        self.baseline = _check_real(baseline, "baseline", owner, allow_none=True)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = check_int(start_from_epoch, "start_from_epoch", owner=owner)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        # Reset, so that an instance can be reused across `fit` calls.
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # The first monitored epoch is the best one so far.
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # Patience restarts only when the baseline is beaten too.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            _missing_key_warning("Early stopping", self.monitor, logs)
        return value


# -- ReduceLROnPlateau -----------------------------------------------------------


class ReduceLROnPlateau(_MonitorCallback):
    """Multiplies the learning rate by `factor` when a quantity stops improving.

    Same arguments and behaviour as `keras.callbacks.ReduceLROnPlateau`,
    including writing `learning_rate` into the epoch logs (so `History` and a
    later `CSVLogger` record it).

    Args:
        monitor: The log key to monitor (e.g. `"val_loss"`).
        factor: The factor the learning rate is multiplied by
            (`new_lr = lr * factor`); in (0, 1).
        patience: Number of epochs without improvement after which the
            learning rate is reduced.
        verbose: 0 (silent) or 1 (a line at each reduction).
        mode: `"auto"`, `"min"` or `"max"`: whether lower or higher is
            better; `"auto"` infers it from the name.
        min_delta: Minimum change that counts as an improvement.
        cooldown: Number of epochs to wait after a reduction before
            counting again.
        min_lr: Lower bound on the learning rate.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        owner = "ReduceLROnPlateau"
        super().__init__(monitor, mode, min_delta, owner)
        factor = _check_real(factor, "factor", owner)
        if not 0.0 <= factor < 1.0:
            raise ValueError(
                f"{owner} does not support a factor outside [0, 1): the learning rate is "
                f"multiplied by it. Received factor={factor!r}."
            )
        self.factor = factor
        self.patience = check_int(patience, "patience", owner=owner)
        self.verbose = _check_verbose(verbose, owner)
        self.cooldown = check_int(cooldown, "cooldown", owner=owner)
        min_lr = _check_real(min_lr, "min_lr", owner)
        if min_lr < 0:
            raise ValueError(f"{owner}: `min_lr` must be >= 0; received min_lr={min_lr!r}.")
        self.min_lr = min_lr
        self.cooldown_counter = 0
        self.wait = 0

    def _reset(self) -> None:
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()
        for _, optimizer in _optimizers(self.model):
            _check_lr_settable(optimizer, "ReduceLROnPlateau")

    def _reduce(self, optimizer: Any, epoch: int, name: str | None) -> bool:
        old_lr = _read_lr(optimizer)
        if old_lr <= np.float32(self.min_lr):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        optimizer.learning_rate = new_lr
        if self.verbose > 0:
            which = f" {name}" if name else ""
            print(
                f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing{which} learning rate to {new_lr}."
            )
        return True

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        logs = logs if logs is not None else {}
        _log_lrs(self.model, logs)
        current = logs.get(self.monitor)
        if current is None:
            _missing_key_warning("Learning rate reduction", self.monitor, logs)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                reduced = False
                for name, optimizer in _optimizers(self.model):
                    reduced = self._reduce(optimizer, epoch, name) or reduced
                if reduced:
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


# -- LearningRateScheduler -------------------------------------------------------


def _schedule_arity(schedule: Any) -> int | None:
    """2 for `schedule(epoch, lr)`, 1 for `schedule(epoch)`, None if unknown."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    positional = 0
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return 2
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    if positional >= 2:
        return 2
    if positional == 1:
        return 1
    return None


def _as_lr(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"The output of the `schedule` function should be a float. Got: {value!r}")
    if isinstance(value, numbers.Real):
        return value
    message = f"The output of the `schedule` function should be a float. Got: {value!r}"
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except Exception as e:  # anything Keras cannot convert: reported with its cause
        raise ValueError(message) from e
    if array.shape != () or array.dtype.kind not in "fiu":
        raise ValueError(message)
    return float(array)


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch from `schedule`.

    `schedule(epoch, lr)` (or `schedule(epoch)`) returns the learning rate
    for the 0-based `epoch`; `lr` is the current one. The rate is written to
    the epoch logs as `learning_rate`, as Keras does.

    Args:
        schedule: A function `schedule(epoch, lr)` or `schedule(epoch)`
            returning the new learning rate (a float).
        verbose: 0 (silent) or 1 (a line per update).
    """

    def __init__(self, schedule: collections.abc.Callable, verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "LearningRateScheduler: `schedule` must be callable, as schedule(epoch, lr) "
                f"or schedule(epoch); received schedule={schedule!r}."
            )
        self.schedule = schedule
        self.verbose = _check_verbose(verbose, "LearningRateScheduler")
        self._arity = _schedule_arity(schedule)

    def _next_lr(self, optimizer: Any, epoch: int) -> Any:
        current = _read_lr(optimizer)
        if self._arity == 2:
            value = self.schedule(epoch, current)
        elif self._arity == 1:
            value = self.schedule(epoch)
        else:  # no signature to read: Keras's way
            try:
                value = self.schedule(epoch, current)
            except TypeError:
                value = self.schedule(epoch)
        return _as_lr(value)

    def on_train_begin(self, logs=None):
        for _, optimizer in _optimizers(self.model):
            _check_lr_settable(optimizer, "LearningRateScheduler")

    def on_epoch_begin(self, epoch, logs=None):
        for name, optimizer in _optimizers(self.model):
            lr = self._next_lr(optimizer, epoch)
            optimizer.learning_rate = lr
            if self.verbose > 0:
                which = f"{name} " if name else ""
                print(
                    f"\nEpoch {epoch + 1}: LearningRateScheduler setting {which}learning rate to {lr}."
                )

    def on_epoch_end(self, epoch, logs=None):
        _log_lrs(self.model, logs)


# -- CSVLogger -------------------------------------------------------------------


class CSVLogger(Callback):
    """Streams the epoch logs to a CSV file, one row per epoch.

    As Keras's: the columns are `epoch` then the first epoch's keys, sorted;
    when that epoch has no `val_` keys, `val_` twins of every key are added
    (filled with "NA" until validation runs). With `append=True` rows are
    added to an existing file and the header is written only if the file is
    empty or new, so a resumed run continues the same table; a header that
    differs from the existing one is reported with a warning.

    Args:
        filename: The CSV file (local or `gs://`; written through
            `tf.io.gfile`).
        separator: The string between fields.
        append: Add to an existing file instead of overwriting it.
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(
                f"CSVLogger: `filename` must be a str or path; received filename={filename!r}."
            )
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(
                "CSVLogger: `separator` must be a 1-character string; received "
                f"separator={separator!r}."
            )
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.append_header = True
        self.keys: list[str] | None = None
        self.writer = None
        self.csv_file = None
        self._existing_header: list[str] | None = None

    def _open(self, mode: str):
        if "://" in self.filename:  # gs://, s3://, ...: through TensorFlow's file system
            import tensorflow as tf

            return tf.io.gfile.GFile(self.filename, mode)
        return open(self.filename, mode, newline="", encoding="utf-8")

    def _exists(self) -> bool:
        if "://" in self.filename:
            import tensorflow as tf

            return tf.io.gfile.exists(self.filename)
        return os.path.exists(self.filename)

    def on_train_begin(self, logs=None):
        self._existing_header = None
        try:
            if self.append:
                if self._exists():
                    with self._open("r") as f:
                        first = f.readline()
                    self.append_header = not first
                    if first:
                        self._existing_header = next(csv.reader([first], delimiter=self.sep), None)
                mode = "a"
            else:
                mode = "w"
            self._close()
            self.csv_file = self._open(mode)
        except Exception as e:
            # Before the first epoch, naming the argument (gs:// paths raise TF errors).
            import tensorflow as tf

            if not isinstance(e, (OSError, tf.errors.OpError)):
                raise
            raise paths.path_error(
                e,
                "filename",
                self.filename,
                action="be opened for writing",
                owner="CSVLogger",
                accepted="Pass a file path in an existing, writable directory.",
            ) from e
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs.keys())
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend(f"val_{k}" for k in list(self.keys))
        if self.writer is None:
            fieldnames = ["epoch"] + self.keys
            if self._existing_header is not None and self._existing_header != fieldnames:
                warnings.warn(
                    f"CSVLogger is appending to {self.filename!r}, whose header "
                    f"{self._existing_header} differs from this run's columns {fieldnames}; "
                    "the new rows follow this run's columns.",
                    stacklevel=2,
                )
            self.writer = csv.DictWriter(
                self.csv_file,
                fieldnames=fieldnames,
                dialect=_dialect(self.sep),
            )
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((key, _csv_value(logs.get(key, "NA"))) for key in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def _close(self) -> None:
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()

    def on_train_end(self, logs=None):
        self._close()
        self.writer = None


def _dialect(separator: str) -> type[csv.Dialect]:
    class Dialect(csv.excel):
        delimiter = separator

    return Dialect


def _csv_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value
    if isinstance(value, collections.abc.Iterable):
        return f"[{', '.join(map(str, value))}]"
    return value


# -- TerminateOnNaN --------------------------------------------------------------


class TerminateOnNaN(Callback):
    """Stops training when the loss in the batch logs is NaN or infinite.

    The check reads the logs after each execution (a host read of the loss);
    training stops after that execution, with `on_epoch_end` and
    `on_train_end` still called. With `raise_error=True` a `RuntimeError` is
    raised instead, skipping the remaining hooks (Keras 3's option).

    Args:
        raise_error: Raise a `RuntimeError` instead of stopping training.
    """

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        if not isinstance(raise_error, (bool, np.bool_)):
            raise TypeError(
                f"TerminateOnNaN: `raise_error` must be a bool; received raise_error={raise_error!r}."
            )
        self.raise_error = bool(raise_error)

    def on_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None:
            return
        if not np.all(np.isfinite(loss)):
            if self.raise_error:
                raise RuntimeError(
                    f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                    "Terminating training immediately."
                )
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


# -- LambdaCallback --------------------------------------------------------------

_HOOKS = frozenset(
    name for name in vars(Callback) if name.startswith("on_") and callable(getattr(Callback, name))
)


class LambdaCallback(Callback):
    """A callback from plain functions, one per hook, as Keras's.

    Only the hooks given are set (as instance attributes), so a
    `LambdaCallback` without batch hooks never makes the engine read batch
    logs. Hooks are called positionally: `on_epoch_*(epoch, logs)`,
    `on_train_*(logs)`, `on_*_batch_*(batch, logs)`. Other hooks (for example
    `on_batch_end`, `on_test_end`) are passed by name.

    Args:
        on_epoch_begin: Called as `on_epoch_begin(epoch, logs)`.
        on_epoch_end: Called as `on_epoch_end(epoch, logs)`.
        on_train_begin: Called as `on_train_begin(logs)`.
        on_train_end: Called as `on_train_end(logs)`.
        on_train_batch_begin: Called as `on_train_batch_begin(batch, logs)`.
        on_train_batch_end: Called as `on_train_batch_end(batch, logs)`.
        **kwargs: Any other hook by name, e.g. `on_test_end=fn`; an unknown
            name raises.
    """

    def __init__(
        self,
        on_epoch_begin: collections.abc.Callable | None = None,
        on_epoch_end: collections.abc.Callable | None = None,
        on_train_begin: collections.abc.Callable | None = None,
        on_train_end: collections.abc.Callable | None = None,
        on_train_batch_begin: collections.abc.Callable | None = None,
        on_train_batch_end: collections.abc.Callable | None = None,
        **kwargs: collections.abc.Callable,
    ) -> None:
        super().__init__()
        hooks = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_train_batch_begin": on_train_batch_begin,
            "on_train_batch_end": on_train_batch_end,
        }
        unknown = sorted(set(kwargs) - _HOOKS)
        if unknown:
            raise TypeError(
                f"LambdaCallback got unexpected keyword argument(s) {unknown}; the hooks are "
                f"{sorted(_HOOKS)}."
            )
        hooks.update(kwargs)
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(
                    f"LambdaCallback: `{name}` must be callable or None; received {name}={fn!r}."
                )
            setattr(self, name, fn)
