"""One replica's arithmetic: losses normalised by the *global* batch.

Every function here runs inside `strategy.run` (replica context) and is pure
TF, so it compiles with XLA and would run on a TPU. Losses are reduced by the
global number of elements (an all-reduce of the local counts) rather than
each replica's own, so replicas with uneven shares of a partial last batch
still add up to exactly the single-device loss, and summing gradients across
replicas gives exactly the single-device gradient.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfk_trainer import compat


def _replica_context() -> tf.distribute.ReplicaContext:
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError("The train/test step must run inside `strategy.run`.")
    return ctx


def num_replicas() -> int:
    return _replica_context().num_replicas_in_sync


def all_reduce_sum(value: tf.Tensor) -> tf.Tensor:
    ctx = _replica_context()
    if ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def batch_size_of(x: Any) -> tf.Tensor:
    """The local batch size (dynamic), from the first leaf of `x` (dense, ragged or sparse)."""
    first = tf.nest.flatten(x)[0]
    if isinstance(first, tf.RaggedTensor):
        return first.nrows(out_type=tf.int32)
    if isinstance(first, tf.SparseTensor):
        return tf.cast(first.dense_shape[0], tf.int32)
    return tf.shape(first)[0]


def same_rank(x1: tf.Tensor, x2: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras's rank reconciliation: when the static ranks differ by one and the
    longer tensor ends in a dimension of 1, squeeze it, or expand the shorter
    when it is a vector. Used for `y_true`/`y_pred` of function losses and for
    per-element losses against weights and masks, so they all agree."""
    r1, r2 = x1.shape.rank, x2.shape.rank
    if r1 is None or r2 is None or r1 == r2:
        return x1, x2
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1:
            x2 = tf.expand_dims(x2, -1)
        else:
            x1 = tf.squeeze(x1, -1)
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1:
            x1 = tf.expand_dims(x1, -1)
        else:
            x2 = tf.squeeze(x2, -1)
    return x1, x2


def expand_to_rank(t: tf.Tensor, rank: int | None) -> tf.Tensor:
    """`t` with trailing dimensions of 1 added up to `rank`, so per-sample
    values (weights, valid rows) broadcast over per-element ones."""
    if rank is None:
        return t
    while t.shape.rank is not None and t.shape.rank < rank:
        t = tf.expand_dims(t, -1)
    return t


def _squeeze_or_expand(values: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`same_rank`, then per-sample weights broadcast over trailing loss dimensions."""
    values, weights = same_rank(values, weights)
    return values, expand_to_rank(weights, values.shape.rank)


def loss_sum_and_count(
    loss: keras.losses.Loss,
    y_true: Any,
    y_pred: Any,
    sample_weight: Any,
    valid: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """The local weighted loss sum and the count it must be divided by.

    Returns `(local_sum, local_count, local_batch)`. `local_count` is None for
    the "sum" reductions (no division). `valid` marks the real rows of a
    padded batch (static-shape mode): padding adds nothing to the sum and
    is not counted. A loss function that already returns a scalar (its own
    local mean) is weighted by the local batch size.
    """
    dtype = getattr(loss, "dtype", None) or "float32"
    mask = compat.keras_mask(y_pred)
    y_pred = tf.nest.map_structure(lambda t: tf.cast(t, dtype), y_pred)
    y_true = tf.nest.map_structure(lambda t: tf.cast(t, dtype), y_true)
    values = tf.cast(loss.call(y_true, y_pred), dtype)
    out_mask = compat.keras_mask(values)
    if mask is not None and out_mask is not None:
        mask = tf.logical_and(tf.cast(mask, tf.bool), tf.cast(out_mask, tf.bool))
    elif out_mask is not None:
        mask = out_mask
    if valid is None:
        local_batch = tf.cast(batch_size_of(y_pred), dtype)
    else:
        local_batch = tf.reduce_sum(tf.cast(valid, dtype))
    reduction = getattr(loss, "reduction", "sum_over_batch_size") or "none"

    if values.shape.rank == 0:
        return values * local_batch, local_batch, local_batch
    _check_loss_batch(loss, values, y_pred)

    # `presence`: 1 for elements that count (Keras mask and padding), else 0.
    presence = None
    if mask is not None:
        values, presence = _squeeze_or_expand(values, tf.cast(mask, dtype))
    if valid is not None:
        rows = expand_to_rank(tf.cast(valid, dtype), values.shape.rank)
        presence = rows if presence is None else presence * rows
    weights = presence
    if sample_weight is not None:
        sw = tf.cast(sample_weight, dtype)
        if weights is None:
            weights = sw
        else:
            weights, sw = _squeeze_or_expand(weights, sw)
            weights = weights * sw
    if weights is not None:
        values, weights = _squeeze_or_expand(values, weights)
        try:
            tf.broadcast_static_shape(values.shape, weights.shape)
        except ValueError as e:
            raise ValueError(
                f"`sample_weight` of shape {weights.shape} does not fit the per-element "
                f"losses of shape {values.shape}: pass one weight per sample `(N,)`, or per "
                "timestep `(N, T)` for temporal data."
            ) from e
        values = values * weights
    local_sum = tf.reduce_sum(values)

    if reduction in ("sum", "none"):
        return local_sum, None, local_batch
    if reduction == "mean_with_sample_weight" and weights is not None:
        count = tf.reduce_sum(weights * tf.ones_like(values))
    elif presence is not None:
        count = tf.reduce_sum(presence * tf.ones_like(values))
    else:
        count = tf.cast(tf.size(values), dtype)
    return local_sum, count, local_batch


def _check_loss_batch(loss: keras.losses.Loss, values: tf.Tensor, y_pred: Any) -> None:
    """A loss must return one value per sample (or per element), or a scalar."""
    batch = tf.nest.flatten(y_pred)[0].shape[0]
    message = (
        f"The `loss` {getattr(loss, 'name', loss)!r} returned values of shape {values.shape}, "
        "but it must return a scalar or one value per sample (first dimension = batch size"
        + (f" {batch}" if batch is not None else "")
        + ")."
    )
    if values.shape[0] is not None and batch is not None:
        if values.shape[0] != batch:
            raise ValueError(message)
        return
    tf.debugging.assert_equal(tf.shape(values)[0], batch_size_of(y_pred), message=message)


def divide_no_nan(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(a, tf.cast(b, a.dtype))
