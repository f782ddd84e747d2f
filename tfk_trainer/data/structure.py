"""Unpacking and checking of the `(x, y, sample_weight)` structure of a batch.

The Keras 3 API docs define one rule for iterator-like inputs: an element is a tuple of
length 1, 2 or 3 read as `(x, y, sample_weight)`; anything else is `x` alone.
Namedtuples are rejected because they are both ordered and keyed. Every
adapter funnels its elements through `unpack_x_y_sample_weight`, so the rule
lives in one place.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf


def is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def check_not_namedtuple(value: Any, argument: str) -> None:
    """Raises a clear `TypeError` for namedtuples anywhere at the top of a batch."""
    if is_namedtuple(value):
        raise TypeError(
            f"`{argument}` yielded a namedtuple ({type(value).__name__} with fields "
            f"{value._fields}). Namedtuples are ambiguous (ordered like a tuple, keyed "
            "like a dict) and are not accepted: yield a plain tuple `(x, y)` or "
            "`(x, y, sample_weight)`, with dicts inside it for named inputs."
        )


def unpack_x_y_sample_weight(data: Any) -> tuple[Any, Any, Any]:
    """Splits one element into `(x, y, sample_weight)` per the Keras 3 API docs' rule."""
    check_not_namedtuple(data, "x")
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data[0], data[1], data[2]
    raise ValueError(
        "Data is expected to be a tuple of length 1, 2 or 3 read as `(x,)`, "
        f"`(x, y)` or `(x, y, sample_weight)`; received a tuple of length {len(data)}."
    )


def lists_to_tuples(value: Any) -> Any:
    """Lists become tuples, as Keras does: tf.data would stack a list of equal
    arrays into one tensor, and cannot hold a list of mixed dtypes at all."""
    if isinstance(value, list):
        return tuple(lists_to_tuples(v) for v in value)
    if isinstance(value, tuple) and not is_namedtuple(value):
        return tuple(lists_to_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: lists_to_tuples(v) for k, v in value.items()}
    return value


def pack_x_y_sample_weight(x: Any, y: Any = None, sample_weight: Any = None) -> tuple:
    if y is None:
        return (x,)
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)


def is_composite(value: Any) -> bool:
    """A `tf.RaggedTensor` or `tf.SparseTensor`: kept as it is, never densified."""
    return isinstance(value, (tf.RaggedTensor, tf.SparseTensor))


def is_composite_spec(spec: Any) -> bool:
    """The spec of a composite leaf (`RaggedTensorSpec`, `SparseTensorSpec`)."""
    return isinstance(spec, (tf.RaggedTensorSpec, tf.SparseTensorSpec))


def has_composite(value: Any) -> bool:
    """Whether any leaf of a structure of tensors, arrays or specs is composite."""
    return any(is_composite(v) or is_composite_spec(v) for v in tf.nest.flatten(value))


def is_scipy_sparse(value: Any) -> bool:
    """A SciPy sparse matrix or array (checked by module: SciPy is never imported)."""
    return type(value).__module__.startswith("scipy.sparse") and hasattr(value, "tocoo")


def scipy_to_sparse(value: Any) -> tf.SparseTensor:
    """A SciPy sparse matrix as a `tf.SparseTensor` in canonical (row-major) order.

    Keras keeps SciPy inputs sparse (`scipy_sparse_to_tf_sparse`); densifying a
    bag-of-words matrix could need gigabytes, so the engine keeps it sparse too.
    """
    coo = value.tocoo()
    indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
    sparse = tf.SparseTensor(indices, coo.data, [int(d) for d in coo.shape])
    return tf.sparse.reorder(sparse)


def leaf_rank(value: Any) -> int:
    """The rank of an array, tensor or composite leaf."""
    if is_composite(value):
        return int(value.shape.rank)
    return int(np.ndim(value))


def leaf_shape(value: Any) -> list:
    """A leaf's dims (None for a ragged dimension)."""
    if is_composite(value) or isinstance(value, (tf.Tensor, tf.Variable)):
        return value.shape.as_list()
    if isinstance(value, np.ndarray):
        return list(value.shape)
    return list(np.shape(value))


def leaf_dtype(value: Any) -> tf.DType:
    """A leaf's dtype as a `tf.DType`."""
    if is_composite(value) or isinstance(value, (tf.Tensor, tf.Variable)):
        return value.dtype
    return tf.as_dtype(np.asarray(value).dtype)


def spec_with_shape(like: Any, shape: list) -> Any:
    """A spec of `like`'s kind (dense, ragged or sparse; `like` a leaf or a spec)
    and dtype, with the given shape."""
    if isinstance(like, (tf.RaggedTensor, tf.RaggedTensorSpec)):
        if isinstance(like, tf.RaggedTensor):
            splits = like.row_splits.dtype
        else:
            splits = like.row_splits_dtype
        return tf.RaggedTensorSpec(
            shape, like.dtype, ragged_rank=like.ragged_rank, row_splits_dtype=splits
        )
    if isinstance(like, (tf.SparseTensor, tf.SparseTensorSpec)):
        return tf.SparseTensorSpec(shape, like.dtype)
    dtype = like.dtype if isinstance(like, tf.TensorSpec) else leaf_dtype(like)
    return tf.TensorSpec(shape, dtype)


def batch_rows(value: Any) -> tf.Tensor:
    """The (dynamic) number of rows of a batch's leaf, dense or composite."""
    if isinstance(value, tf.RaggedTensor):
        return value.nrows(out_type=tf.int32)
    if isinstance(value, tf.SparseTensor):
        return tf.cast(value.dense_shape[0], tf.int32)
    return tf.shape(value)[0]


def slice_rows(value: Any, lo: int, hi: int) -> Any:
    """Rows `[lo, hi)` of an array, tensor, composite tensor or SciPy matrix."""
    if isinstance(value, tf.SparseTensor):
        shape = value.shape.as_list()
        return tf.sparse.slice(value, [lo] + [0] * (len(shape) - 1), [hi - lo] + shape[1:])
    if is_scipy_sparse(value):
        return value.tocsr()[lo:hi]
    return value[lo:hi]


def is_array_like(value: Any) -> bool:
    """True for NumPy arrays, tensors (dense, ragged, sparse), SciPy sparse
    matrices and objects that look like arrays."""
    if isinstance(value, (np.ndarray, tf.Tensor, tf.Variable)) or is_composite(value):
        return True
    if isinstance(value, (str, bytes, dict, list, tuple)) or value is None:
        return False
    if isinstance(value, (tf.data.Dataset,)):
        return False
    return hasattr(value, "__array__") or (hasattr(value, "shape") and hasattr(value, "dtype"))


def is_array_structure(value: Any) -> bool:
    """True for an array or a (possibly nested) list/tuple/dict of arrays."""
    if value is None:
        return False
    if is_namedtuple(value):
        return False
    leaves = tf.nest.flatten(value)
    return bool(leaves) and all(is_array_like(leaf) for leaf in leaves)


def to_array(value: Any, argument: str) -> Any:
    """Converts an array-like leaf to a NumPy array or keeps a tensor, checking dtype."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        if isinstance(value, tf.Variable):
            return tf.convert_to_tensor(value)
        return value
    if is_composite(value):
        if value.shape.rank == 0:
            raise ValueError(f"`{argument}` is a scalar; expected a tensor of samples.")
        return value
    if is_scipy_sparse(value):
        return scipy_to_sparse(value)
    if hasattr(value, "to_numpy"):  # pandas DataFrame / Series
        value = value.to_numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(
            f"`{argument}` holds Python objects (dtype=object, shape {array.shape}); "
            "expected a numeric or string array. Mixed types or ragged nested lists "
            "cannot be batched: convert them to a numeric NumPy array first."
        )
    if array.dtype.kind == "U":
        array = array.astype(object).astype(bytes)
    if array.ndim == 0:
        raise ValueError(
            f"`{argument}` is a scalar ({array!r}); expected an array whose first "
            "dimension indexes samples."
        )
    return array


# TensorFlow tensors must start on a 64-byte boundary (Eigen's alignment with AVX-512).
_TENSOR_ALIGNMENT = 64
# Below this, the second copy `tf.convert_to_tensor` makes costs nothing worth avoiding.
_ONE_COPY_MIN_BYTES = 1 << 20


def to_tensor(value: Any) -> tf.Tensor:
    """A NumPy array as a tensor with one copy of its data, not two.

    `tf.convert_to_tensor` copies an array (so later writes to it cannot
    change the tensor) and then copies it again into an aligned buffer: for
    a 100 MB input that is 200 MB of transient memory and 40-70 ms on every
    `fit`/`predict` call. Here the array is copied once, into a private
    aligned buffer that TensorFlow adopts through DLPack without copying;
    nothing else holds that buffer, so the tensor is as immutable as ever.
    Small arrays, tensors and dtypes DLPack does not carry (strings) take
    the ordinary path.
    """
    if is_composite(value):
        return value
    if (
        not isinstance(value, np.ndarray)
        or value.nbytes < _ONE_COPY_MIN_BYTES
        or value.dtype.kind not in "biufc"
        or not value.dtype.isnative
    ):
        return tf.convert_to_tensor(value)
    buffer = np.empty(value.nbytes + _TENSOR_ALIGNMENT, np.uint8)
    offset = -buffer.ctypes.data % _TENSOR_ALIGNMENT
    aligned = buffer[offset : offset + value.nbytes].view(value.dtype).reshape(value.shape)
    np.copyto(aligned, value)
    try:
        return tf.experimental.dlpack.from_dlpack(aligned.__dlpack__())
    except (TypeError, ValueError, BufferError, tf.errors.OpError):
        return tf.convert_to_tensor(value)


def to_arrays(x: Any, y: Any, sample_weight: Any) -> tuple[tuple, int]:
    """`(x, y, sample_weight)` given to fit/evaluate/predict as arrays: the packed
    `(x,)`, `(x, y)` or `(x, y, sample_weight)` and the number of samples, each leaf
    checked (`to_array`) and all of one length, naming the argument otherwise."""
    x, y, sample_weight = (lists_to_tuples(v) for v in (x, y, sample_weight))
    x = tf.nest.map_structure(lambda a: to_array(a, "x"), x)
    y = None if y is None else tf.nest.map_structure(lambda a: to_array(a, "y"), y)
    if sample_weight is not None:
        sample_weight = tf.nest.map_structure(lambda a: to_array(a, "sample_weight"), sample_weight)
    count = check_consistent_lengths({"x": x, "y": y, "sample_weight": sample_weight})
    if sample_weight is not None and y is None:
        raise ValueError("`sample_weight` was given without `y`; weights apply to targets.")
    return pack_x_y_sample_weight(x, y, sample_weight), count


def num_samples(value: Any) -> int:
    first = tf.nest.flatten(value)[0]
    return int(leaf_shape(first)[0])


def check_consistent_lengths(named: dict[str, Any]) -> int:
    """Checks that every leaf of every argument has the same number of samples."""
    lengths: dict[str, int] = {}
    for argument, value in named.items():
        if value is None:
            continue
        paths = _leaf_paths(value, argument)
        for path, leaf in paths:
            shape = leaf_shape(leaf)
            if not shape:
                raise ValueError(f"`{path}` is a scalar; expected an array of samples.")
            if shape[0] is None:
                raise ValueError(f"`{path}` has an unknown number of rows (shape {shape}).")
            lengths[path] = int(shape[0])
    distinct = sorted(set(lengths.values()))
    if len(distinct) > 1:
        detail = ", ".join(f"{p}: {n}" for p, n in lengths.items())
        raise ValueError(
            f"All arrays must have the same number of samples (first dimension); received {detail}."
        )
    if distinct and distinct[0] == 0:
        raise ValueError(
            f"The input data is empty (0 samples in {', '.join(lengths)}); `fit`, `evaluate` "
            "and `predict` need at least one sample."
        )
    return distinct[0] if distinct else 0


def _leaf_paths(value: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for key in value:
            out.extend(_leaf_paths(value[key], f"{prefix}[{key!r}]"))
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for i, item in enumerate(value):
            out.extend(_leaf_paths(item, f"{prefix}[{i}]"))
        return out
    return [(prefix, value)]


class PaddedBatch(NamedTuple):
    """A batch padded to the static batch size, with its real rows marked.

    Static-shape mode (TPUs) pads the last batch of `evaluate`/`predict` so
    every batch has the same shape; `valid` is a bool vector, True for real
    rows. The engine's steps weight losses and metrics by it and drop the
    padded predictions, so results equal the dynamic-shape ones.
    """

    data: tuple
    valid: Any


def split_padding(data: Any) -> tuple[Any, Any]:
    """`(data, valid)` for a PaddedBatch, `(data, None)` otherwise."""
    if isinstance(data, PaddedBatch):
        return data.data, data.valid
    return data, None


def set_batch_dim(batch: Any, batch_size: int) -> Any:
    """Pins the batch dimension of every dense leaf (static shapes for XLA/TPU).

    Composite leaves (ragged, sparse) keep their shapes: XLA cannot take them,
    and their batch dimension lives in their row partition or dense shape.
    """
    return tf.nest.map_structure(
        lambda t: (
            tf.ensure_shape(t, [batch_size] + t.shape.as_list()[1:])
            if t.shape.rank and not is_composite(t)
            else t
        ),
        batch,
    )
