"""`Callback`, `CallbackList` and lazily materialised logs.

Callbacks written for `keras.callbacks.Callback` work unchanged: the hook
names and `set_model`/`set_params` are Keras's. What differs is the dispatch:
batch hooks that a callback does not override are never called, and batch
logs are a `LazyLogs` mapping whose values are copied from the device only
when something reads them. A run with no batch-level reader therefore never
synchronises the host per execution.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import keras
from absl import logging as absl_logging

from tfk_trainer.engine.logs import LazyLogs, to_python

__all__ = ["Callback", "CallbackList", "LazyLogs", "print_msg", "to_python"]

log = logging.getLogger("tfk_trainer")


def print_msg(message: str) -> None:
    """A callback's `verbose` message, where Keras's callbacks write theirs: stdout
    while Keras's interactive logging is on (the default), else absl's log
    (`keras.config.disable_interactive_logging()` silences stdout for both)."""
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()
    else:
        absl_logging.info(message)


class Callback:
    """Base class for callbacks, Keras-compatible (same hooks, same attributes).

    `coarse_batch_hooks`: True when the callback's batch hooks only need to
    run every so often (the progress bar refreshes on a time interval), not
    at every batch. A run whose batch hooks are all coarse lets the engine
    run many steps per execution whatever `steps_per_execution` says (see
    `tfk_trainer.engine.tuning`); the hooks then see every execution's last
    batch.
    """

    coarse_batch_hooks: bool = False
    run_state: Any = None  # the run's RunState, from `set_run_state`

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self._model = None
        self.run_state: Any = None

    def set_run_state(self, state: Any) -> None:
        """Receives the run's `tfk_trainer.engine.run_state.RunState` before any hook.

        tfk_trainer's own extension (Keras callbacks have no such hook and
        never need it): a callback that must see the engine (the training
        position, the compiled functions) reads it here, not from the model.

        Args:
            state: the run's `RunState`; kept as `self.run_state`.
        """
        self.run_state = state

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def set_model(self, model: Any) -> None:
        self._model = model

    @property
    def model(self) -> Any:
        return self._model

    def on_batch_begin(self, batch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...
    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...


_BATCH_HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


def _overrides(callback: Any, hook: str) -> bool:
    """True when `callback` overrides `hook` beyond the no-op base classes."""
    if hook in vars(callback):  # set per instance, e.g. keras.callbacks.LambdaCallback
        return True
    method = getattr(type(callback), hook, None)
    if method is None:
        return False
    defined_in = next((k for k in type(callback).__mro__ if hook in vars(k)), None)
    if defined_in is None:
        return False
    # Keras's base class is named by identity, not by the private module defining it.
    return defined_in.__module__ != __name__ and defined_in is not keras.callbacks.Callback


class CallbackList:
    """Dispatches hooks to callbacks; our own, not Keras's CallbackList."""

    def __init__(
        self,
        callbacks: Iterable[Any] | None,
        *,
        model: Any,
        params: dict[str, Any],
        run_state: Any = None,
    ):
        """`run_state`: the run's `RunState`, handed to every callback that defines
        `set_run_state` (before `set_model`), so none reads the model's internals."""
        from tfk_trainer.callbacks import keras_compat

        self.callbacks = keras_compat.flatten(callbacks or [])
        for cb in self.callbacks:
            if not all(hasattr(cb, h) for h in ("set_model", "set_params", "on_epoch_end")):
                raise TypeError(
                    "`callbacks` must be a list of Callback instances (tfk_trainer.callbacks."
                    f"Callback or keras.callbacks.Callback); received {type(cb).__name__}."
                )
        keras_compat.check_supported(self.callbacks)  # before anything runs or trains
        self.model = model
        self.run_state = run_state
        self.set_params(params)
        for cb in self.callbacks:
            if run_state is not None and hasattr(cb, "set_run_state"):
                cb.set_run_state(run_state)
            cb.set_model(model)
        keras_compat.resolve_auto_modes(self.callbacks, model)
        self._batch_hooks = {
            hook: [cb for cb in self.callbacks if _overrides(cb, hook) or _train_alias(cb, hook)]
            for hook in _BATCH_HOOKS
        }

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    def append(self, callback: Any) -> None:
        raise NotImplementedError  # built once; see `__init__`

    def _call(self, hook: str, *args, logs=None) -> None:
        # Keras hands every hook a dict (`{}` for the `*_begin` hooks), and user
        # callbacks write `logs["x"]` or `logs.get(...)`: never None.
        for cb in self.callbacks:
            getattr(cb, hook)(*args, logs={} if logs is None else logs)

    def wants_batch(self, hook: str) -> bool:
        return bool(self._batch_hooks[hook])

    def watches_every_batch(self, mode: str) -> bool:
        """True when a callback needs every batch boundary of `mode` ("train", "test", "predict")."""
        hooks = (f"on_{mode}_batch_begin", f"on_{mode}_batch_end")
        return any(
            not getattr(cb, "coarse_batch_hooks", False)
            for hook in hooks
            for cb in self._batch_hooks[hook]
        )

    def step_intervals(self) -> list[int]:
        """The optimizer-step intervals (> 1) that callbacks declare through an int
        `step_interval` attribute: train executions end on their multiples (see
        `tfk_trainer.engine.tuning.cut_at_intervals`)."""
        out = set()
        for cb in self.callbacks:
            interval = getattr(cb, "step_interval", None)
            if isinstance(interval, int) and not isinstance(interval, bool) and interval > 1:
                out.add(interval)
        return sorted(out)

    def _batch(self, hook: str, batch: int, logs: Any) -> None:
        for cb in self._batch_hooks[hook]:
            getattr(cb, hook)(batch, logs={} if logs is None else logs)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs=logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs=logs)

    def on_train_abort(self) -> None:
        """`fit` is leaving with an exception, so `on_train_end` will not run (as in
        Keras). Callbacks that hold process-wide resources release them here
        through an optional `_on_train_abort()` (TensorBoard stops its profiler,
        which would otherwise stay on and block every later profiler). A failure
        here is logged, never raised over the original exception."""
        for cb in self.callbacks:
            release = getattr(cb, "_on_train_abort", None)
            if release is None:
                continue
            try:
                release()
            except Exception:  # noqa: BLE001 - the training error is the one to surface
                log.warning(
                    "%s could not clean up after a failed fit", type(cb).__name__, exc_info=True
                )

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs=logs)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs=logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs=logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs=logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._batch("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._batch("on_train_batch_end", batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._batch("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._batch("on_test_batch_end", batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._batch("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._batch("on_predict_batch_end", batch, logs)


def _train_alias(callback: Any, hook: str) -> bool:
    """`on_batch_begin/end` overrides are reached through the train batch hooks."""
    if hook == "on_train_batch_begin":
        return _overrides(callback, "on_batch_begin")
    if hook == "on_train_batch_end":
        return _overrides(callback, "on_batch_end")
    return False
