"""Keras's own `keras.callbacks` classes in a tfk `fit`.

Most of them only read logs and use the model's public surface
(`stop_training`, `optimizer.learning_rate`, `get_weights`, `save`,
`save_weights`, `metrics`), which `tfk_trainer.Model` has, so they run
unchanged. Three depend on Keras's trainer internals (its compiled
`train_function`, its data iterators, its `built` training state, Orbax's
model-state layout) and are refused when the `CallbackList` is made, before
any step runs, with the tfk callback that does the job.

`KERAS_CALLBACKS` says what happens to every public class of
`keras.callbacks`; the test suite fails when Keras adds a class that is not in
it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras

# Every public class of keras.callbacks: "works", or the tfk class to use instead.
KERAS_CALLBACKS: dict[str, str] = {
    "Callback": "works",
    "CallbackList": "works",  # its callbacks are dispatched by tfk's CallbackList
    "CSVLogger": "works",
    "EarlyStopping": "works",
    "History": "works",
    "LambdaCallback": "works",
    "LearningRateScheduler": "works",
    "ModelCheckpoint": "works",  # through Model.save / Model.save_weights
    "ProgbarLogger": "works",
    "ReduceLROnPlateau": "works",
    "RemoteMonitor": "works",
    "SwapEMAWeights": "works",
    "TerminateOnNaN": "works",
    "BackupAndRestore": "tfk_trainer.callbacks.BackupAndRestore",
    "OrbaxCheckpoint": "tfk_trainer.callbacks.ModelCheckpoint or tfk_trainer.callbacks.BackupAndRestore",
    "TensorBoard": "tfk_trainer.callbacks.TensorBoard",
}

_WHY_REFUSED = {
    "BackupAndRestore": "it restores through Keras's trainer state (`model.built`, its epoch "
    "iterator), which a tfk model does not have",
    "OrbaxCheckpoint": "it saves Keras's trainer state through Orbax",
    "TensorBoard": "it traces Keras's compiled `model.train_function`, which a tfk model does "
    "not have",
}


def flatten(callbacks: Iterable[Any]) -> list:
    """The callbacks, with any `CallbackList` (Keras's or ours) replaced by its contents."""
    flat: list = []
    for cb in callbacks:
        inner = getattr(cb, "callbacks", None)
        if isinstance(cb, keras.callbacks.CallbackList) or (
            type(cb).__name__ == "CallbackList" and isinstance(inner, list)
        ):
            flat.extend(flatten(inner))
        else:
            flat.append(cb)
    return flat


def check_supported(callbacks: Iterable[Any]) -> None:
    """Raises a TypeError naming the tfk equivalent for a Keras callback that cannot run.

    Subclasses of those classes are refused too: they inherit the dependency.
    """
    for cb in callbacks:
        for name, use in KERAS_CALLBACKS.items():
            cls = getattr(keras.callbacks, name, None)
            if use == "works" or cls is None or not isinstance(cb, cls):
                continue
            raise TypeError(
                f"keras.callbacks.{name} cannot run in a tfk_trainer fit: {_WHY_REFUSED[name]}. "
                f"Use {use} instead. Nothing was trained."
            )


def resolve_auto_modes(callbacks: Iterable[Any], model: Any) -> None:
    """Keras's monitor callbacks with `mode="auto"` find a metric's direction in Keras's
    own compiled-metrics container, which a tfk model does not have; here the
    direction comes from tfk's one rule (`callbacks/monitor.py`, a superset of
    Keras's), and `mode` is set to "min" or "max" before training. A key the
    rule cannot place keeps `mode="auto"`, and Keras raises its own error.
    """
    from tfk_trainer.callbacks.monitor import monitor_direction

    monitored = tuple(
        getattr(keras.callbacks, n)
        for n in ("EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau")
        if hasattr(keras.callbacks, n)
    )
    for cb in callbacks:
        if not isinstance(cb, monitored) or getattr(cb, "mode", None) != "auto":
            continue
        if getattr(cb, "monitor_op", None) is not None:
            continue
        direction = monitor_direction(str(cb.monitor), model)
        if direction is not None:
            cb.mode = direction
