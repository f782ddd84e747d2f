"""Small standard callbacks: `TerminateOnNaN` and `LambdaCallback` (Keras 3's)."""

from __future__ import annotations

import collections.abc

import numpy as np

from tfk_trainer.callbacks.base import Callback, print_msg

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
            print_msg(f"Batch {batch}: Invalid loss, terminating training")
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
            `on_...` name raises (a misspelled hook); other names are stored
            as attributes, as Keras does.
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
        # Keras stores any other keyword argument as an attribute (user state the
        # hooks share); so do we, except names that look like a misspelled hook
        # (`on_...`), which would otherwise never be called.
        unknown = sorted(k for k in set(kwargs) - _HOOKS if k.startswith("on_"))
        if unknown:
            raise TypeError(
                f"LambdaCallback got unexpected keyword argument(s) {unknown}; the hooks are "
                f"{sorted(_HOOKS)}."
            )
        for name in set(kwargs) - _HOOKS:
            setattr(self, name, kwargs.pop(name))
        hooks.update(kwargs)
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(
                    f"LambdaCallback: `{name}` must be callable or None; received {name}={fn!r}."
                )
            setattr(self, name, fn)
