"""`get_adapter`: the one place that decides which adapter an input gets.

The rules are the Keras 3 API docs': a `tf.data.Dataset`, a `PyDataset` or a
generator carries its own targets and batching (so `y` and `sample_weight`
must not accompany it, and a `batch_size` is ignored with a warning, as Keras
ignores it); arrays, tensors and lists/dicts of them
are batched here. In static-shape mode every source but arrays (which
implement the modes natively) is wrapped in a `StaticShapeAdapter`.

This module is the top of `tfk_trainer.data`: it imports the concrete
adapters, and none of them imports it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer.data import class_weight as class_weight_lib
from tfk_trainer.data import structure
from tfk_trainer.data.adapters import ArrayAdapter, DatasetAdapter
from tfk_trainer.data.base import DataAdapter
from tfk_trainer.data.functions import DatasetFunctionAdapter, is_dataset_function
from tfk_trainer.data.python_sources import (
    GeneratorAdapter,
    PyDatasetAdapter,
    is_generator_like,
    is_py_dataset,
)
from tfk_trainer.data.static import StaticShapeAdapter


def get_adapter(
    x: Any,
    y: Any = None,
    sample_weight: Any = None,
    *,
    batch_size: int | None = None,
    shuffle: bool | str = False,
    class_weight: dict | None = None,
    static: str | None = None,
    argument: str = "x",
) -> DataAdapter:
    """Picks the adapter for `x`, with the Keras 3 API docs' rules on what may accompany it.

    `static` selects static-shape mode: "drop" or "wrap" (training) or "pad"
    (evaluate/predict); None keeps the partial last batch as it is.
    """
    _check_arguments(x, batch_size=batch_size, class_weight=class_weight, argument=argument)
    adapter = _source_adapter(
        x,
        y,
        sample_weight,
        batch_size=batch_size,
        shuffle=shuffle,
        class_weight=class_weight,
        argument=argument,
    )
    if adapter is None:
        # Arrays implement the static-shape modes themselves (they re-index samples).
        return _array_adapter(
            x,
            y,
            sample_weight,
            batch_size=batch_size,
            shuffle=shuffle,
            class_weight=class_weight,
            static=static,
            argument=argument,
        )
    if static is not None:
        adapter = StaticShapeAdapter(adapter, static)
    return adapter


def _check_arguments(
    x: Any, *, batch_size: int | None, class_weight: dict | None, argument: str
) -> None:
    """The checks every input kind shares, before its kind is looked at."""
    if x is None:
        raise ValueError(f"`{argument}` is required; received None.")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(
                f"`batch_size` must be a positive int or None; received {batch_size!r}."
            )
        if batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive int or None; received {batch_size}.")
    if class_weight is not None:
        class_weight_lib.validate(class_weight)


def _source_adapter(
    x: Any,
    y: Any,
    sample_weight: Any,
    *,
    batch_size: int | None,
    shuffle: bool | str,
    class_weight: dict | None,
    argument: str,
) -> DataAdapter | None:
    """The adapter of an already-batched source (dataset, PyDataset, generator), or
    None when `x` is none of them."""
    extras = {"y": y, "sample_weight": sample_weight, "batch_size": batch_size}
    if is_dataset_function(x):
        _reject_with_dataset(**extras, kind="a DatasetFunction")
        return DatasetFunctionAdapter(x, class_weight=class_weight, argument=argument)
    if isinstance(x, tf.data.Dataset):
        _reject_with_dataset(**extras, kind="a tf.data.Dataset")
        return DatasetAdapter(x, class_weight=class_weight)
    if is_py_dataset(x):
        _reject_with_dataset(**extras, kind="a PyDataset")
        return PyDatasetAdapter(x, shuffle=shuffle, class_weight=class_weight, argument=argument)
    if is_generator_like(x) or (
        callable(x) and not structure.is_array_like(x) and not isinstance(x, type)
    ):
        _reject_with_dataset(**extras, kind="a generator")
        return GeneratorAdapter(x, class_weight=class_weight, argument=argument)
    return None


def _array_adapter(
    x: Any,
    y: Any,
    sample_weight: Any,
    *,
    batch_size: int | None,
    shuffle: bool | str,
    class_weight: dict | None,
    static: str | None,
    argument: str,
) -> ArrayAdapter:
    """The adapter of in-memory arrays; a clear TypeError for anything else."""
    if isinstance(x, (tf.distribute.DistributedDataset,)):
        raise TypeError(
            "`x` is an already-distributed dataset; pass the plain tf.data.Dataset "
            "and let the model distribute it under its strategy."
        )
    structure.check_not_namedtuple(x, "x")
    if not structure.is_array_structure(x):
        raise TypeError(
            f"Unrecognized data type for `{argument}`: {type(x).__name__}. Accepted: a NumPy "
            "array or array-like, a tensor, a list or dict of arrays/tensors, a "
            "tf.data.Dataset, a PyDataset, or a Python generator (or a callable returning one)."
        )
    if y is not None and not structure.is_array_structure(y):
        raise TypeError(
            f"`y` must be an array or a list/dict of arrays when `x` is; received {type(y).__name__}."
        )
    if sample_weight is not None and not structure.is_array_structure(sample_weight):
        raise TypeError(
            "`sample_weight` must be an array when `x` is; received "
            f"{type(sample_weight).__name__}."
        )
    return ArrayAdapter(
        x,
        y,
        sample_weight,
        batch_size=batch_size,
        shuffle=shuffle,
        class_weight=class_weight,
        static=static,
    )


def _reject_with_dataset(*, y: Any, sample_weight: Any, batch_size: Any, kind: str) -> None:
    """`y`, `sample_weight` and `batch_size` come from a batched source itself."""
    if y is not None:
        raise ValueError(
            f"`y` must not be given when `x` is {kind}: the targets come from `x` "
            "(yield `(x, y)` or `(x, y, sample_weight)`)."
        )
    if sample_weight is not None:
        raise ValueError(
            f"`sample_weight` must not be given when `x` is {kind}: yield "
            "`(x, y, sample_weight)` instead."
        )
    if batch_size is not None:
        # Keras ignores it (its guides pass one with a PyDataset): so do we, saying so.
        warnings.warn(
            f"`batch_size={batch_size}` is ignored: `x` is {kind}, which makes its own batches.",
            stacklevel=4,
        )
