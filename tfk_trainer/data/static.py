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

import numpy as np
import tensorflow as tf

from tfk_trainer.data.base import DataAdapter
from tfk_trainer.data.structure import PaddedBatch, set_batch_dim

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
    n = tf.shape(tf.nest.flatten(batch)[0])[0]
    tf.debugging.assert_less_equal(
        n, batch_size, message=f"A batch is larger than the static batch size {batch_size}."
    )

    def pad(t):
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

    @property
    def num_batches(self) -> int | None:
        return None if self._mode == "drop" else self._inner.num_batches

    @property
    def is_infinite(self) -> bool:
        return self._inner.is_infinite

    @property
    def batch_size(self) -> int:
        return self._batch_size

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

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        dataset = self._inner.get_dataset(repeat=repeat, first_epoch=first_epoch)
        size = self._batch_size
        if self._mode == "drop":
            dataset = dataset.filter(lambda *b: tf.shape(tf.nest.flatten(b)[0])[0] == size)
            return dataset.map(lambda *b: set_batch_dim(b, size))
        return dataset.map(lambda *b: pad_batch(b, size))


def _first_batch_size(adapter: DataAdapter) -> int:
    """The static batch size: the adapter's own, else its first batch's (read once)."""
    if adapter.batch_size:
        return int(adapter.batch_size)
    first = adapter.first_batch
    if first is not None:
        return int(np.shape(tf.nest.flatten(first)[0])[0])
    spec = adapter.element_spec
    dim = tf.nest.flatten(spec)[0].shape[0]
    if dim is not None:
        return int(dim)
    for batch in adapter.get_dataset().take(1):
        return int(tf.shape(tf.nest.flatten(batch)[0])[0])
    raise ValueError("Static-shape mode could not find the batch size: the data is empty.")
