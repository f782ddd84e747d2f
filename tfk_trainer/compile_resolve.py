"""Names to Keras objects for `compile()`: optimizers, metrics, and the name checks.

The part of compile's resolution that needs no loss wrapper: `OPTIMIZERS`
(the names `compile()` and the binary accept), `resolve_optimizer`,
`resolve_metric` (with Keras's shape rule for "accuracy"/"crossentropy")
and `_resolve_named`, whose error lists close matches. Losses are resolved in
`compile.py`, next to `FunctionLoss`, whose module the engine recognises as
its own step code.
"""

from __future__ import annotations

import difflib
from typing import Any

import keras
import tensorflow as tf

_ACCURACY = ("accuracy", "acc")
_CROSSENTROPY = ("crossentropy", "ce")

# The optimizers known by name (what `keras.optimizers.get` resolves, lower-case),
# with their classes: `compile()` names them in its error for an unknown name,
# and the training binary builds its optimizer from them.
OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adadelta": keras.optimizers.Adadelta,
    "adafactor": keras.optimizers.Adafactor,
    "adagrad": keras.optimizers.Adagrad,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "adamax": keras.optimizers.Adamax,
    "ftrl": keras.optimizers.Ftrl,
    "lamb": keras.optimizers.Lamb,
    "lion": keras.optimizers.Lion,
    "nadam": keras.optimizers.Nadam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


def _kind_from_shapes(y_true_shape: tf.TensorShape, y_pred_shape: tf.TensorShape) -> str:
    """Keras's rule: binary, sparse or categorical, from static shapes."""
    y_true_shape = tf.TensorShape(y_true_shape)
    y_pred_shape = tf.TensorShape(y_pred_shape)
    if y_pred_shape.rank and y_pred_shape[-1] == 1:
        return "binary"
    t_rank, p_rank = y_true_shape.rank, y_pred_shape.rank
    if t_rank is not None and p_rank is not None and t_rank < p_rank:
        return "sparse"
    if t_rank and p_rank and y_true_shape[-1] == 1 and (y_pred_shape[-1] or 0) > 1:
        return "sparse"
    return "categorical"


def resolve_optimizer(optimizer: Any) -> keras.optimizers.Optimizer:
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        if optimizer.lower() in OPTIMIZERS:  # "lamb" too, which keras.optimizers.get misses
            return OPTIMIZERS[optimizer.lower()]()
        try:
            return keras.optimizers.get(optimizer)
        except ValueError as e:
            names = sorted(OPTIMIZERS)
            close = difflib.get_close_matches(optimizer.lower(), names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Unknown optimizer {optimizer!r} for `optimizer`. Accepted: an instance of "
                f"keras.optimizers.Optimizer or one of {names}.{hint}"
            ) from e
    raise TypeError(
        "`optimizer` must be a string (e.g. 'adam') or a keras.optimizers.Optimizer "
        f"instance; received {type(optimizer).__name__}: {optimizer!r}."
    )


def _all_names(module) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_"))


def _resolve_named(identifier: str, kind: str, getter, module, argument: str | None = None) -> Any:
    try:
        return getter(identifier)
    except (ValueError, TypeError) as e:
        candidates = [n for n in _all_names(module) if n[:1].islower()]
        candidates += ["mse", "mae", "mape", "msle", "kld", "accuracy", "acc", "crossentropy", "ce"]
        close = difflib.get_close_matches(identifier, candidates, n=3, cutoff=0.6)
        hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
        raise ValueError(
            f"Unknown {'loss' if kind == 'loss' else 'metric'} {identifier!r} in "
            f"`{argument or kind}`.{hint} "
            "Accepted: a name from "
            f"{module.__name__} (e.g. {candidates[:4]}), a callable `fn(y_true, y_pred)`, "
            f"or a keras {'Loss' if kind == 'loss' else 'Metric'} instance."
        ) from e


# 'accuracy'/'acc' and 'crossentropy'/'ce' by the kind `_kind_from_shapes` reads.
_SHAPE_RESOLVED_METRICS = {
    "accuracy": {
        "binary": keras.metrics.BinaryAccuracy,
        "sparse": keras.metrics.SparseCategoricalAccuracy,
        "categorical": keras.metrics.CategoricalAccuracy,
    },
    "crossentropy": {
        "binary": keras.metrics.BinaryCrossentropy,
        "sparse": keras.metrics.SparseCategoricalCrossentropy,
        "categorical": keras.metrics.CategoricalCrossentropy,
    },
}


def resolve_metric(
    identifier: Any, y_true_shape, y_pred_shape, argument: str
) -> keras.metrics.Metric:
    """A `keras.metrics.Metric` named as the user wrote it."""
    if isinstance(identifier, type) and issubclass(identifier, keras.metrics.Metric):
        identifier = identifier()  # a class, as Keras accepts
    if isinstance(identifier, keras.metrics.Metric):
        return identifier
    if isinstance(identifier, str):
        lowered = identifier.lower()
        family = "accuracy" if lowered in _ACCURACY else "crossentropy"
        if lowered in _ACCURACY + _CROSSENTROPY:
            kind = _kind_from_shapes(y_true_shape, y_pred_shape)
            return _SHAPE_RESOLVED_METRICS[family][kind](name=identifier)
        obj = _resolve_named(identifier, "metrics", keras.metrics.get, keras.metrics, argument)
        if isinstance(obj, keras.metrics.Metric):
            obj.name = identifier
            return obj
        return keras.metrics.MeanMetricWrapper(obj, name=identifier)
    if callable(identifier):
        name = getattr(identifier, "__name__", type(identifier).__name__)
        return keras.metrics.MeanMetricWrapper(identifier, name=name)
    raise TypeError(
        f"Each entry of `{argument}` must be a string, a callable `fn(y_true, y_pred)` or a "
        f"keras.metrics.Metric instance; received {type(identifier).__name__}: {identifier!r}."
    )
