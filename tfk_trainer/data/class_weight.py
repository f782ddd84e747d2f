"""`class_weight`: per-class loss weights turned into per-sample weights in tf.data.

One implementation serves arrays and datasets alike. Labels are read the way
the Keras 3 API docs describe: one-hot targets (last dimension > 1) by argmax, sparse
targets with an explicit final dimension of 1 by squeezing; temporal sparse
labels `(N, T)` get one weight per timestep. Classes missing from the dict,
and class ids outside it (negative or above the largest key), weigh 1.0,
rather than failing deep inside TensorFlow as Keras does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def validate(class_weight: Any) -> None:
    if not isinstance(class_weight, dict):
        raise TypeError(
            "`class_weight` must be a dict mapping class indices (ints) to weights "
            f"(floats); received {type(class_weight).__name__}."
        )
    if not class_weight:
        raise ValueError("`class_weight` is an empty dict; pass None for no class weighting.")
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
            raise ValueError(
                f"`class_weight` keys must be non-negative int class indices; received key {key!r}."
            )
        try:
            weight = float(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`class_weight[{key}]` must be a number; received {value!r}.") from e
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(
                f"`class_weight[{key}]` must be a finite, non-negative number; received {value!r}."
            )


def _weight_table(class_weight: dict) -> tf.Tensor:
    size = int(max(class_weight)) + 1
    table = np.ones(size, np.float32)
    for key, value in class_weight.items():
        table[int(key)] = float(value)
    return tf.constant(table)


def sample_weights_for(y: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
    """Per-sample (or per-timestep) weights for a batch of labels."""
    if y.shape.rank is not None and y.shape.rank >= 2 and y.shape[-1] is not None:
        if y.shape[-1] > 1:
            y = tf.argmax(y, axis=-1)
        elif y.shape[-1] == 1:
            y = tf.squeeze(y, axis=-1)
    ids = tf.cast(tf.round(tf.cast(y, tf.float32)), tf.int64)
    size = tf.shape(table, out_type=tf.int64)[0]
    in_range = tf.logical_and(ids >= 0, ids < size)
    safe_ids = tf.where(in_range, ids, tf.zeros_like(ids))
    return tf.where(in_range, tf.gather(table, safe_ids), tf.ones_like(safe_ids, tf.float32))


def apply_to_dataset(dataset: tf.data.Dataset, class_weight: dict) -> tf.data.Dataset:
    """Adds (or multiplies into) the sample weights of a `(x, y[, sw])` dataset."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError("`class_weight` needs targets `y`, but the data yields no `y`.")
    if tf.nest.is_nested(spec[1]):
        raise ValueError(
            "`class_weight` is only supported for models with a single output; the "
            f"targets here are a structure: {spec[1]}. Pass per-output `sample_weight` "
            "instead."
        )
    table = _weight_table(class_weight)

    @tf.autograph.experimental.do_not_convert  # static Python only
    def add_weights(*element):
        x, y = element[0], element[1]
        weights = sample_weights_for(y, table)
        if len(element) == 3 and element[2] is not None:
            sw = tf.cast(element[2], tf.float32)
            if sw.shape.rank is not None and weights.shape.rank is not None:
                while sw.shape.rank < weights.shape.rank:
                    sw = tf.expand_dims(sw, -1)
            weights = weights * sw
        return x, y, weights

    return dataset.map(add_weights, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
