"""The adapters of data that TensorFlow holds: in-memory arrays and `tf.data.Dataset`s.

Both end as a batched `tf.data.Dataset` of `(x,)`, `(x, y)` or
`(x, y, sample_weight)` tuples, behind the `base.DataAdapter` interface.
Python sources (generators, PyDatasets) are in `python_sources`; which
adapter a given input gets is decided in `factory`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer.data import class_weight as class_weight_lib
from tfk_trainer.data import structure
from tfk_trainer.data.base import DataAdapter
from tfk_trainer.data.structure import PaddedBatch

_MAX_EPOCHS = 2**62
# The pipeline's map functions use Python control flow on static values only:
# traced without autograph, which tf.data would otherwise apply to each of them
# (a conversion per function per process, paid before the first step).
_plain = tf.autograph.experimental.do_not_convert


class ArrayAdapter(DataAdapter):
    """NumPy arrays, tensors, and lists/dicts of them.

    The data is placed in the pipeline once (`from_tensors(...).repeat()`),
    and each epoch batches a permutation of the sample indices and gathers
    the rows in a parallel `map`: no per-sample Python work. The permutation
    of epoch `e` is a pure function of `(seed, e)`, so a resumed run that
    skips to epoch `e` sees exactly the batches an uninterrupted run saw.
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        batch_size: int | None = None,
        shuffle: bool | str = False,
        class_weight: dict | None = None,
        seed: int | None = None,
        static: str | None = None,
        whole_batch: bool = False,
    ):
        """`whole_batch=True`: all samples form one batch (the *_on_batch methods)."""
        if static not in (None, "drop", "wrap", "pad"):
            raise ValueError(
                f'`static` must be None, "drop", "wrap" or "pad"; received {static!r}.'
            )
        if shuffle not in (True, False, "batch"):
            raise ValueError(
                f'`shuffle` must be True, False or "batch"; received shuffle={shuffle!r}.'
            )
        x, y, sample_weight = (structure.lists_to_tuples(v) for v in (x, y, sample_weight))
        x = tf.nest.map_structure(lambda a: structure.to_array(a, "x"), x)
        y = None if y is None else tf.nest.map_structure(lambda a: structure.to_array(a, "y"), y)
        if sample_weight is not None:
            sample_weight = tf.nest.map_structure(
                lambda a: structure.to_array(a, "sample_weight"), sample_weight
            )
        self._num_samples = structure.check_consistent_lengths(
            {"x": x, "y": y, "sample_weight": sample_weight}
        )
        if sample_weight is not None and y is None:
            raise ValueError("`sample_weight` was given without `y`; weights apply to targets.")
        self._batch_size = (
            self._num_samples if whole_batch else min(batch_size or 32, self._num_samples)
        )
        self._shuffle = shuffle
        self._data = structure.pack_x_y_sample_weight(x, y, sample_weight)
        self._data_tensors = None  # `_data` as tensors, made on first use
        self._class_weight = class_weight
        self._seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
        self._static = static
        if static is not None:
            # A static batch is never clipped to the data: padding fills it.
            self._batch_size = batch_size or 32
        if static == "drop" and self._num_samples < self._batch_size:
            raise ValueError(
                f"Static-shape mode drops the last partial batch, but there are only "
                f"{self._num_samples} samples for batch_size={self._batch_size}: no batch is left. "
                'Use a smaller batch size or static_remainder="wrap".'
            )

    @property
    def num_samples(self) -> int:
        return self._num_samples

    @property
    def arrays(self) -> tuple:
        """The whole data, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, as given (NumPy
        arrays or tensors): for up-front checks of the values (label ranges)."""
        return self._data

    @property
    def seed(self) -> int:
        """The shuffle seed: epoch `e` is the permutation of `(seed, e)`."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = int(value)

    @property
    def element_spec(self) -> tuple:
        return tf.nest.map_structure(
            lambda a: tf.TensorSpec([None] + list(a.shape[1:]), tf.as_dtype(a.dtype)), self._data
        )

    @property
    def num_batches(self) -> int:
        if self._static == "drop":
            return self._num_samples // self._batch_size
        return -(-self._num_samples // self._batch_size)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def can_repeat(self) -> bool:
        return True

    @property
    def exact_batches(self) -> bool:
        return True

    def _epoch_index_batches(self, epoch: tf.Tensor) -> tf.data.Dataset:
        n, bs = self._num_samples, self._batch_size
        indices = tf.range(n, dtype=tf.int64)
        seed = tf.stack([tf.constant(self._seed, tf.int64), epoch])
        if self._shuffle is True:
            indices = tf.random.experimental.stateless_shuffle(indices, seed=seed)
        full = (n // bs) * bs
        batches = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[:full], [-1, bs]))
        if self._shuffle == "batch":
            # Shuffle the order of contiguous batches, then the rows inside each.
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n // bs, dtype=tf.int64), seed=seed
            )
            batches = tf.data.Dataset.from_tensor_slices(
                tf.gather(tf.reshape(indices[:full], [-1, bs]), order)
            ).map(_plain(lambda b: tf.random.experimental.stateless_shuffle(b, seed=seed + 1)))
        if full < n and self._static != "drop":
            tail = indices[full:]
            missing = bs - (n - full)
            if self._static == "wrap":
                # Complete the last batch with the epoch's first samples (tiled if needed).
                tail = tf.concat([tail, tf.tile(indices, [missing // n + 1])[:missing]], 0)
            elif self._static == "pad":
                tail = tf.concat([tail, -tf.ones([missing], tf.int64)], 0)
            batches = batches.concatenate(tf.data.Dataset.from_tensors(tail))
        return batches

    def _group_size(self) -> int:
        """Batches gathered per `map` call: several when batches are small.

        Each `map` call costs tens of microseconds of tf.data overhead, which
        dominates for small batches: gathering up to 16 batches at once (about
        64 KB) and splitting them with `unbatch` halves the pipeline's CPU per
        batch there. Large batches gain nothing (the copy in `unbatch` costs more).
        """
        if self._static is not None:
            return 1
        row_bytes = sum(
            tf.as_dtype(a.dtype).size * int(np.prod([d or 1 for d in list(a.shape)[1:]]))
            for a in tf.nest.flatten(self._data)  # NumPy arrays or tensors
        )
        return int(max(1, min(16, 65536 // max(1, row_bytes * self._batch_size))))

    def _epoch_index_groups(self, epoch: tf.Tensor, group: int) -> tf.data.Dataset:
        """The epoch's index batches, `group` full batches per element (shape [k, b])."""
        batches = self._epoch_index_batches(epoch)
        if group == 1:
            return batches
        n, bs = self._num_samples, self._batch_size
        full = n // bs
        groups = batches.take(full).batch(group)
        if full * bs < n:  # the partial last batch, as a group of one
            groups = groups.concatenate(batches.skip(full).map(_plain(lambda b: b[tf.newaxis])))
        return groups

    def _tensors(self) -> tuple:
        """The arrays as tensors, converted once per adapter."""
        if self._data_tensors is None:
            self._data_tensors = tf.nest.map_structure(structure.to_tensor, self._data)
        return self._data_tensors

    def _data_dataset(self) -> tf.data.Dataset:
        """The arrays as one repeated element, for the index-gathering pipeline."""
        return tf.data.Dataset.from_tensors(self._tensors()).repeat()

    def _in_order_batches(self) -> tf.data.Dataset:
        """One epoch in order (`shuffle=False`: evaluate, predict), with no `map`.

        The full batches are a reshape of the data (`[num_batches, batch, ...]`,
        no copy: a prefix slice and a reshape share the buffer), sliced one
        batch per element; a partial last batch follows. Nothing is traced,
        so making the pipeline costs well under a millisecond, and reading a
        batch is one contiguous copy.
        """
        n, bs = self._num_samples, self._batch_size
        full = n // bs
        data = self._tensors()
        dataset = None
        if full:
            dataset = tf.data.Dataset.from_tensor_slices(
                tf.nest.map_structure(
                    lambda t: tf.reshape(t[: full * bs], [full, bs, *t.shape[1:]]), data
                )
            )
        if full * bs < n:
            tail = tf.data.Dataset.from_tensors(
                tf.nest.map_structure(lambda t: t[full * bs :], data)
            )
            dataset = tail if dataset is None else dataset.concatenate(tail)
        return dataset

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        if self._shuffle is False and self._static is None:
            dataset = self._in_order_batches()
            if repeat:
                dataset = dataset.repeat()  # every epoch is the same order
            return self._finish(dataset)
        group = self._group_size()
        if repeat:
            index_batches = tf.data.Dataset.range(first_epoch, _MAX_EPOCHS).flat_map(
                lambda epoch: self._epoch_index_groups(epoch, group)
            )
        else:
            # One epoch: its index batches are built eagerly (the same ops as in the
            # flat_map above, so the same permutation), which saves tracing a function.
            index_batches = self._epoch_index_groups(tf.constant(first_epoch, tf.int64), group)
        data = self._data_dataset()

        static, bs = self._static, self._batch_size

        @_plain
        def gather(idx, arrays):
            rows = tf.maximum(idx, 0)
            batch = tf.nest.map_structure(lambda a: tf.gather(a, rows, axis=0), arrays)
            if static is None:
                return batch
            batch = structure.set_batch_dim(batch, bs)
            if static == "pad":
                return PaddedBatch(tuple(batch), idx >= 0)
            return batch

        dataset = tf.data.Dataset.zip((index_batches, data)).map(
            gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        if group > 1:
            dataset = dataset.unbatch()  # [k, b, ...] groups -> batches of b
        if self._class_weight is not None and static == "pad":
            raise ValueError("`class_weight` applies to training only, not to padded evaluation.")
        return self._finish(dataset)

    def _finish(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Class weights, sharding and tf.data options, and prefetching."""
        if self._class_weight is not None:
            dataset = class_weight_lib.apply_to_dataset(dataset, self._class_weight)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        # tf.data's default graph rewrites would serialise the dataset graph, arrays
        # included, when an iterator is made: an extra copy of the data in memory and
        # 10-20 ms per iterator. The pipeline is already parallel and prefetched.
        options.experimental_optimization.apply_default_optimizations = False
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


class DatasetAdapter(DataAdapter):
    """A user's `tf.data.Dataset`, already batched; elements unpacked as the Keras 3 API docs say."""

    def __init__(self, dataset: tf.data.Dataset, *, class_weight: dict | None = None):
        spec = dataset.element_spec
        structure.check_not_namedtuple(spec, "x")
        if isinstance(spec, tuple):
            if not 1 <= len(spec) <= 3:
                raise ValueError(
                    "A tf.data.Dataset passed as `x` must yield `(x,)`, `(x, y)` or "
                    f"`(x, y, sample_weight)`; its elements are tuples of length {len(spec)}: "
                    f"{spec}."
                )
            for part in spec:
                structure.check_not_namedtuple(part, "x")
        else:
            dataset = dataset.map(_plain(lambda *x: (x[0] if len(x) == 1 else x,)))
        self._dataset = dataset
        self._class_weight = class_weight
        if class_weight is not None and (not isinstance(spec, tuple) or len(spec) < 2):
            raise ValueError("`class_weight` needs targets, but the dataset yields no `y`.")
        cardinality = int(dataset.cardinality())
        if cardinality == 0:
            raise ValueError("The tf.data.Dataset passed as `x` is empty (0 batches).")
        self._infinite = cardinality == int(tf.data.INFINITE_CARDINALITY)
        self._num_batches = cardinality if cardinality >= 0 else None

    @property
    def num_batches(self) -> int | None:
        return self._num_batches

    @property
    def is_infinite(self) -> bool:
        return self._infinite

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        dataset = self._dataset
        if self._class_weight is not None:
            dataset = class_weight_lib.apply_to_dataset(dataset, self._class_weight)
        return dataset


def train_validation_split(arrays: tuple, validation_split: float) -> tuple[tuple, tuple]:
    """Splits `(x, y, sw)` arrays: the last `validation_split` fraction, before shuffling."""
    flat = [a for a in tf.nest.flatten(arrays) if a is not None]
    n = int(flat[0].shape[0])
    split_at = int(np.floor(n * (1.0 - validation_split)))
    if split_at == 0 or split_at == n:
        raise ValueError(
            f"validation_split={validation_split} leaves "
            f"{'no training' if split_at == 0 else 'no validation'} samples out of {n}; "
            "choose a fraction that keeps at least one sample on each side."
        )

    def take(lo, hi):
        return tf.nest.map_structure(lambda a: None if a is None else a[lo:hi], arrays)

    return take(0, split_at), take(split_at, n)
