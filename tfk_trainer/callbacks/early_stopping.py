"""`EarlyStopping`: stops training when a monitored quantity stops improving (Keras 3's)."""

from __future__ import annotations

from tfk_trainer.callbacks.base import print_msg
from tfk_trainer.callbacks.monitored import (
    _check_real,
    _check_verbose,
    _missing_key_warning,
    _MonitorCallback,
)
from tfk_trainer.engine.checks import check_int

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
            print_msg(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print_msg(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            _missing_key_warning("Early stopping", self.monitor, logs)
        return value
