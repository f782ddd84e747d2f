"""What the monitoring callbacks share: argument checks and the monitored quantity.

`EarlyStopping` and `ReduceLROnPlateau` watch one log key in one direction
(`mode`) with a `min_delta`, and every standard callback checks its
constructor arguments the same way; both live here so each callback module
holds one callback family and nothing else.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from tfk_trainer.callbacks import monitor as monitor_lib
from tfk_trainer.callbacks.base import Callback

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
