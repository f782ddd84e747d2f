"""What `TensorBoard` writes besides scalars: the in-graph step, weight histograms, graph trace.

Kept apart from the callback so `callbacks/tensorboard.py` holds the fit
bookkeeping (when to write) and this module the writing itself: the
`iterations + 1` step that in-model summaries read in the graph, scalar
conversion of log values, the per-variable histograms and kernel images,
and stopping a graph trace without raising.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

_UNSAFE_TAG_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


class _NextStep:
    """The default summary step during fit: the optimizer step being computed.

    In-model summaries run in the forward pass, before the optimizer
    increments `iterations`, so the step they belong to is `iterations + 1`
    (the same numbering as the `batch_*` scalars, which are written after
    the step, at `iterations`). The value is read in the graph each time a
    summary is written, which is what makes one traced function log each
    step at its own step; a Python int would be frozen at trace time.

    A summary written *after* `optimizer.apply` in a custom `train_step`
    reads the already incremented counter and lands one step later.
    """

    def __init__(self, iterations: Any):
        self._iterations = iterations

    def __tf_tensor__(self, dtype: tf.DType | None = None, name: str | None = None) -> tf.Tensor:
        value = tf.cast(tf.convert_to_tensor(self._iterations), tf.int64) + 1
        return value if dtype is None else tf.cast(value, dtype)

    def numpy(self) -> np.int64:
        return np.int64(int(tf.convert_to_tensor(self._iterations).numpy()) + 1)

    def __int__(self) -> int:
        return int(self.numpy())

    def __repr__(self) -> str:
        return f"<optimizer step: iterations + 1 = {int(self)}>"


def _as_tf_variable(variable: Any) -> Any:
    """The `tf.Variable` behind a Keras variable (its `.value`), else the object itself."""
    if isinstance(variable, tf.Variable):
        return variable
    inner = getattr(variable, "value", None)
    if isinstance(inner, tf.Variable):
        return inner
    return variable


def _to_float(value: Any) -> float | None:
    """A Python float for a scalar log value, or None when it is not a scalar number."""
    try:
        if hasattr(value, "numpy"):
            value = value.numpy()
        elif not isinstance(value, (int, float, np.number, np.ndarray)):
            value = tf.convert_to_tensor(value).numpy()
        array = np.asarray(value)
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            return None
        return float(array.reshape(()))
    except (TypeError, ValueError):
        return None


def current_learning_rate(optimizer: Any) -> float | None:
    """The optimizer's learning rate now, as a float; None without one (or a non-scalar)."""
    if optimizer is None:
        return None
    try:
        lr = optimizer.learning_rate
    except (AttributeError, TypeError, ValueError):
        return None
    # Keras resolves a schedule in `learning_rate`; a bare callable or
    # schedule object (other optimizers) is evaluated at the true step.
    if callable(lr) and not hasattr(lr, "numpy") and not isinstance(lr, tf.Variable):
        try:
            lr = lr(optimizer.iterations)
        except TypeError:
            lr = lr()
    return _to_float(lr)


def _variable_tag(variable: Any) -> str:
    """A summary tag for a variable: its path (Keras) or name (tf), made safe."""
    name = getattr(variable, "path", None) or getattr(variable, "name", None) or "variable"
    name = str(name)
    if name.endswith(":0"):
        name = name[:-2]
    return _UNSAFE_TAG_CHARS.sub("_", name)


def _trace_off() -> None:
    """Stops the graph trace; a failure is reported, not raised: the graph is optional
    and the fit (or the error that ended it) goes on."""
    try:
        tf.summary.trace_off()
    except Exception as e:  # noqa: BLE001 - optional, reported with the cause
        warnings.warn(
            f"TensorBoard could not stop tracing the train function's graph: "
            f"{type(e).__name__}: {e}",
            stacklevel=3,
        )


def write_weight_summaries(variables: Any, step: int, write_images: bool) -> None:
    """Histograms of `variables` (and with `write_images`, 2-D kernels as images) at `step`,
    into the default writer; repeated tags get `_1`, `_2`... as Keras's callback does."""
    seen: dict[str, int] = {}
    for variable in variables:
        tag = _variable_tag(variable)
        count = seen.get(tag, 0)
        seen[tag] = count + 1
        if count:
            tag = f"{tag}_{count}"
        value = tf.convert_to_tensor(_as_tf_variable(variable))
        tf.summary.histogram(tag, value, step=step)
        if write_images and value.shape.rank == 2:
            image = tf.cast(value, tf.float32)
            low, high = tf.reduce_min(image), tf.reduce_max(image)
            image = tf.math.divide_no_nan(image - low, high - low)
            image = tf.reshape(image, [1, value.shape[0], value.shape[1], 1])
            tf.summary.image(f"{tag}_image", image, step=step)
