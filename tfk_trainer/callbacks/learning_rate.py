"""Callbacks that set the learning rate: `ReduceLROnPlateau` and `LearningRateScheduler`.

Both read and write the optimizers' learning rates through the helpers at
the top (one optimizer, or each of a multi-optimizer's), and refuse an
optimizer built on a `LearningRateSchedule` at `on_train_begin`.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
from typing import Any

import keras
import numpy as np

from tfk_trainer import compat
from tfk_trainer.callbacks.base import Callback, print_msg
from tfk_trainer.callbacks.monitored import (
    _check_real,
    _check_verbose,
    _missing_key_warning,
    _MonitorCallback,
)
from tfk_trainer.engine.checks import check_int

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
            print_msg(
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
                print_msg(
                    f"\nEpoch {epoch + 1}: LearningRateScheduler setting {which}learning rate to {lr}."
                )

    def on_epoch_end(self, epoch, logs=None):
        _log_lrs(self.model, logs)
