"""Static shapes for TPUs: every batch the same size, results still exact.

XLA on TPUs compiles one program per shape, so a ragged last batch means a
second compilation (or fails outright with `drop_remainder=False` under
TPUStrategy). In static-shape mode training either drops the remainder or
wraps it around with samples from the start of the epoch (the user's
choice), and `evaluate`/`predict` pad the last batch and mark the padding
(`PaddedBatch`), which the steps then ignore.

Arrays implement the three modes natively (`ArrayAdapter`); every other
source is adapted here, from its batch size.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfk_trainer.data.base import DataAdapter, Transform
from tfk_trainer.data.structure import PaddedBatch, batch_rows, leaf_shape, set_batch_dim

MODES = ("drop", "wrap", "pad")


def check_mode(mode: Any, argument: str = "static_remainder") -> str:
    if mode not in ("drop", "wrap"):
        raise ValueError(
            f'`{argument}` must be "drop" (training skips the last partial batch) or "wrap" '
            f"(it is completed with samples from the start of the epoch); received {mode!r}."
        )
    return mode


def pad_batch(batch: tuple, batch_size: int) -> PaddedBatch:
    """Pads every leaf of a batch to `batch_size` rows and marks the real ones."""
    n = batch_rows(tf.nest.flatten(batch)[0])
    tf.debugging.assert_less_equal(
        n, batch_size, message=f"A batch is larger than the static batch size {batch_size}."
    )

    def pad(t):
        if isinstance(t, tf.SparseTensor):  # empty rows: only the dense shape grows
            shape = tf.concat([tf.constant([batch_size], tf.int64), t.dense_shape[1:]], 0)
            return tf.SparseTensor(t.indices, t.values, shape)
        if isinstance(t, tf.RaggedTensor):  # empty rows: the last row split repeated
            splits = t.row_splits
            extra = tf.fill([batch_size - n], splits[-1])
            return tf.RaggedTensor.from_row_splits(t.values, tf.concat([splits, extra], 0))
        paddings = [[0, batch_size - n]] + [[0, 0]] * (t.shape.rank - 1)
        return tf.pad(t, paddings)

    padded = set_batch_dim(tf.nest.map_structure(pad, batch), batch_size)
    return PaddedBatch(tuple(padded), tf.range(batch_size) < n)


class StaticShapeAdapter(DataAdapter):
    """Wraps a non-array adapter so every batch has `batch_size` rows.

    It forwards every member of the `DataAdapter` interface to the adapter it
    wraps, except the batching it changes (`num_batches`, `batch_size`,
    `get_dataset`): the interface is all it reads.
    """

    def __init__(self, inner: DataAdapter, mode: str, batch_size: int | None = None):
        if mode not in ("drop", "pad"):
            raise ValueError(
                f'Static-shape mode "{mode}" needs array data (it re-indexes samples); for '
                'datasets, generators and PyDatasets use static_remainder="drop".'
            )
        self._inner = inner
        self._mode = mode
        self._batch_size = batch_size or _first_batch_size(inner)
        # "drop" keeps the count known where every batch is already full (a static
        # batch dimension, e.g. `batch(..., drop_remainder=True)`): the filter is then
        # a no-op, and a known count lets the driver read without end-of-data checks.
        self._all_full = mode == "drop" and _batch_dim(inner) == self._batch_size

    @property
    def num_batches(self) -> int | None:
        if self._mode == "drop" and not self._all_full:
            return None
        return self._inner.num_batches

    @property
    def exact_batches(self) -> bool:
        # A known count of full (or padded) batches: exact, unless the source is
        # Python that may end early on a change of shapes.
        return self._inner.exact_batches or (
            self.num_batches is not None
            and not self._inner.is_infinite
            and not self._inner.can_change_spec
        )

    @property
    def per_replica_batches(self) -> bool:
        return self._inner.per_replica_batches

    @property
    def is_infinite(self) -> bool:
        return self._inner.is_infinite

    @property
    def batch_size(self) -> int | None:
        # A dataset function's batches are per replica: not a global size to split.
        return None if self._inner.per_replica_batches else self._batch_size

    @property
    def can_repeat(self) -> bool:
        return self._inner.can_repeat

    @property
    def one_shot(self) -> bool:
        return self._inner.one_shot

    @property
    def element_spec(self) -> tuple:
        return self._inner.element_spec

    def on_epoch_begin(self, epoch: int) -> None:
        self._inner.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        self._inner.on_epoch_end(epoch)

    @property
    def can_change_spec(self) -> bool:
        return self._inner.can_change_spec

    @property
    def spec_changed(self) -> bool:
        return self._inner.spec_changed

    def raise_pending_error(self) -> None:
        self._inner.raise_pending_error()

    @property
    def first_batch(self) -> tuple | None:
        return self._inner.first_batch

    def relax_all_dims(self) -> None:
        self._inner.relax_all_dims()

    def close(self) -> None:
        self._inner.close()

    def _static(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        size = self._batch_size
        if self._mode == "drop":
            if not self._all_full:
                dataset = dataset.filter(lambda *b: batch_rows(tf.nest.flatten(b)[0]) == size)
            return dataset.map(lambda *b: set_batch_dim(b, size))
        return dataset.map(lambda *b: pad_batch(b, size))

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        return self._static(self._inner.get_dataset(repeat=repeat, first_epoch=first_epoch))

    def distribute(
        self,
        strategy: tf.distribute.Strategy,
        *,
        repeat: bool = False,
        first_epoch: int = 0,
        skip: int = 0,
        transform: Transform | None = None,
        per_host: bool = False,
    ) -> tf.distribute.DistributedDataset:
        def static_then(dataset: tf.data.Dataset) -> tf.data.Dataset:
            dataset = self._static(dataset)
            return dataset if transform is None else transform(dataset)

        return self._inner.distribute(
            strategy,
            repeat=repeat,
            first_epoch=first_epoch,
            skip=skip,
            transform=static_then,
            per_host=per_host,
        )


def _batch_dim(adapter: DataAdapter) -> int | None:
    """The static batch dimension every leaf of the adapter's elements shares, if any."""
    dims = {
        spec.shape[0] if spec.shape.rank else None
        for spec in tf.nest.flatten(adapter.element_spec)
        if isinstance(spec, tf.TensorSpec)
    }
    return dims.pop() if len(dims) == 1 else None


def _first_batch_size(adapter: DataAdapter) -> int:
    """The static batch size: the adapter's own, else its first batch's (read once)."""
    if adapter.batch_size:
        return int(adapter.batch_size)
    first = adapter.first_batch
    if first is not None:
        return int(leaf_shape(tf.nest.flatten(first)[0])[0])
    spec = adapter.element_spec
    dim = tf.nest.flatten(spec)[0].shape[0]
    if dim is not None:
        return int(dim)
    for batch in adapter.get_dataset().take(1):
        return int(batch_rows(tf.nest.flatten(batch)[0]))
    raise ValueError("Static-shape mode could not find the batch size: the data is empty.")
