"""Per-leaf helpers for `tf.RaggedTensor` and `tf.SparseTensor` data (SciPy sparse
matrices arrive as the latter): gathering rows of any leaf kind, and the dtype
rules Python sources apply to every batch. Kept apart so the adapters read the
same for dense and composite data."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer.data import structure


def row_form(leaf: Any) -> Any:
    """A leaf in the form whose rows `gather_rows` takes.

    A `tf.SparseTensor` cannot be gathered by row: its entries are regrouped
    by row once, as ragged `(indices, values)` whose row `i` holds the
    entries of sparse row `i` (Keras's `TensorflowSparseWrapper` does the
    same). Dense and ragged tensors are gathered as they are.
    """
    if not isinstance(leaf, tf.SparseTensor):
        return leaf
    leaf = tf.sparse.reorder(leaf)
    splits = tf.ragged.segment_ids_to_row_splits(
        leaf.indices[:, 0], num_segments=leaf.dense_shape[0]
    )
    return (
        tf.RaggedTensor.from_row_splits(leaf.indices[:, 1:], splits),
        tf.RaggedTensor.from_row_splits(leaf.values, splits),
    )


def gather_rows(like: Any, form: Any, rows: tf.Tensor) -> Any:
    """Rows `rows` of a leaf in its `row_form` (`like`: the leaf, for its kind and
    shape): a tensor, a `tf.RaggedTensor` or a `tf.SparseTensor` of `len(rows)` rows."""
    if not isinstance(like, tf.SparseTensor):
        return tf.gather(form, rows, axis=0)
    indices, values = (tf.gather(part, rows) for part in form)
    row_ids = indices.value_rowids()
    tail = like.shape.as_list()[1:]
    return tf.SparseTensor(
        tf.concat([row_ids[:, tf.newaxis], indices.flat_values], axis=1),
        values.flat_values,
        tf.concat([tf.shape(rows, out_type=tf.int64), tf.constant(tail, tf.int64)], axis=0),
    )


def numpy_kind(leaf: Any) -> str:
    """The NumPy kind of a leaf's dtype ("f", "i", "S", ...), dense or composite."""
    if not structure.is_composite(leaf):
        return np.asarray(leaf).dtype.kind
    return "S" if leaf.dtype == tf.string else np.dtype(leaf.dtype.as_numpy_dtype).kind


def cast_like(leaf: Any, first: Any) -> Any:
    """A later batch's leaf in the first batch's dtype (the spec's)."""
    if structure.is_composite(leaf):
        return leaf if leaf.dtype == first.dtype else tf.cast(leaf, first.dtype)
    return np.asarray(leaf, dtype=np.asarray(first).dtype)


def describe_leaf(leaf: Any) -> str:
    """`float32[4, 3]`, `ragged int32[4, None]`, `sparse float32[4, 8]`: for errors."""
    if not structure.is_composite(leaf):
        return f"{np.asarray(leaf).dtype}{list(np.shape(leaf))}"
    kind = "ragged" if isinstance(leaf, tf.RaggedTensor) else "sparse"
    return f"{kind} {leaf.dtype.name}{leaf.shape.as_list()}"
