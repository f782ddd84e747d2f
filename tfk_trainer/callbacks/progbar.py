"""`ProgbarLogger`: Keras's progress bar, refreshed on a time interval.

The bar is drawn by `keras.utils.Progbar` (a display building block). What
is ours is when it reads numbers: only when `interval` seconds have passed
since the last refresh, or at the end of an epoch, so the logs of most
executions never leave the device.
"""

from __future__ import annotations

import sys
import time

import keras

from tfk_trainer.callbacks.base import Callback


def resolve_verbose(verbose) -> int:
    """`"auto"` is 1 on a terminal and 2 (one line per epoch) otherwise."""
    if verbose == "auto":
        isatty = getattr(sys.stdout, "isatty", None)
        return 1 if (isatty is not None and isatty()) else 2
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f'`verbose` must be "auto", 0, 1 or 2; received verbose={verbose!r}.')
    return int(verbose)


class ProgbarLogger(Callback):
    """Prints metrics to stdout: a progress bar or one line per epoch.

    `fit`, `evaluate` and `predict` add one according to `verbose`; pass one
    only to change `interval`. It refreshes on a time interval, not at every
    batch, so it never forces short executions.

    Args:
        verbose: 1 = progress bar, 2 = one line per epoch, 0 = silent.
        interval: Minimum seconds between progress bar refreshes.
    """

    coarse_batch_hooks = True  # refreshes at most every `interval` seconds

    def __init__(self, verbose: int = 1, interval: float = 0.1):
        super().__init__()
        self.verbose = verbose
        self.interval = interval
        self._progbar = None
        self._target = None
        self._last_refresh = 0.0
        self._in_fit = False
        self._seen = 0

    def set_params(self, params):
        super().set_params(params)
        self.verbose = params.get("verbose", self.verbose)

    def _reset(self, target):
        self._target = target
        self._seen = 0
        self._last_refresh = 0.0
        self._progbar = None
        if self.verbose and target is not None:
            self._bar()  # starts the bar's clock now, so per-step times are real

    def _bar(self):
        if self._progbar is None:
            self._progbar = keras.utils.Progbar(
                target=self._target, verbose=self.verbose, unit_name="step"
            )
        return self._progbar

    def _update(self, batch, logs, finalize=False):
        self._seen = batch + 1
        now = time.monotonic()
        if not finalize and (self.verbose != 1 or now - self._last_refresh < self.interval):
            return
        self._last_refresh = now
        values = list((logs or {}).items()) if logs is not None else []
        bar = self._bar()
        bar.stateful_metrics = set(bar.stateful_metrics) | {k for k, _ in values}
        current = self._seen
        if finalize and self._target is not None:
            current = self._target
        bar.update(current, values, finalize=finalize)

    def on_train_begin(self, logs=None):
        self._in_fit = True

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self._reset(self.params.get("steps"))
        if self.verbose and self.params.get("epochs", 1) > 1:
            print(f"Epoch {epoch + 1}/{self.params['epochs']}")

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._target is None:
            self._target = self._seen
        self._update(self._seen - 1, logs, finalize=True)

    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._reset(self.params.get("steps"))

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit:
            self._update(batch, logs)

    def on_test_end(self, logs=None):
        if not self._in_fit:
            if self._target is None:
                self._target = self._seen
            self._update(self._seen - 1, logs, finalize=True)

    def on_predict_begin(self, logs=None):
        self._reset(self.params.get("steps"))

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)

    def on_predict_end(self, logs=None):
        if self._target is None:
            self._target = self._seen
        self._update(self._seen - 1, None, finalize=True)
