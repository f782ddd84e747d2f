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
from tfk_trainer.data import composite, structure
from tfk_trainer.data.base import DataAdapter, Transform
from tfk_trainer.data.structure import PaddedBatch

_MAX_EPOCHS = 2**62
_ALIGNMENT = 64  # TensorFlow's tensor alignment (Eigen, AVX-512)
# Arrays smaller than this (all leaves together) are placed in the pipeline as
# tensors; larger ones are read from Python-held arrays (`ArrayAdapter._read`).
IN_GRAPH_MAX_BYTES = 4 << 20
# The pipeline's map functions use Python control flow on static values only:
# traced without autograph, which tf.data would otherwise apply to each of them
# (a conversion per function per process, paid before the first step).
_plain = tf.autograph.experimental.do_not_convert


def _nbytes(data: Any) -> int:
    if structure.has_composite(data):
        return 0  # composite leaves are always placed in the pipeline (`ArrayAdapter`)
    return sum(
        int(np.prod(a.shape, dtype=np.int64)) * tf.as_dtype(a.dtype).size
        for a in tf.nest.flatten(data)
    )


def _aligned_empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialised array on a 64-byte boundary: `tf.numpy_function` adopts an
    aligned result as a tensor without copying it (a misaligned one is copied)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + _ALIGNMENT, np.uint8)
    offset = -buffer.ctypes.data % _ALIGNMENT
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def _host_array(value: Any) -> np.ndarray:
    """A leaf as a NumPy array, without copying it: a multi-GB input must not be
    doubled before the first step. Batches are copies of its rows (`_take`), or
    slices TensorFlow may adopt in place (in order), read while the call runs."""
    return value.numpy() if isinstance(value, tf.Tensor) else np.asarray(value)


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`array.take(rows, axis=0)` into an aligned buffer (numeric dtypes)."""
    if array.dtype.kind not in "biufc" or not array.dtype.isnative:
        return array.take(rows, axis=0)
    out = _aligned_empty(rows.shape + array.shape[1:], array.dtype)
    return np.take(array, rows, axis=0, out=out)


class ArrayAdapter(DataAdapter):
    """NumPy arrays, tensors, and lists/dicts of them.

    Each epoch batches a permutation of the sample indices and a parallel
    `map` reads the rows of each batch: no per-sample Python work. Data of
    `IN_GRAPH_MAX_BYTES` or more stays in Python, outside every graph (read
    by `tf.numpy_function`), so no dataset graph holds a constant of its
    size; smaller data is placed in the pipeline as tensors (faster reads), and so
    are `tf.RaggedTensor`/`tf.SparseTensor` leaves (SciPy sparse matrices become
    the latter), whose batches are gathered rows of their own kind. The permutation
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
        self._data, self._num_samples = structure.to_arrays(x, y, sample_weight)
        self._batch_size = (
            self._num_samples if whole_batch else min(batch_size or 32, self._num_samples)
        )
        self._shuffle = shuffle
        self._flat_arrays = None  # the leaves as NumPy arrays, made on first use
        self._data_tensors = None  # `_data` as tensors (small data), made on first use
        self._row_forms = None  # `_data_tensors`' leaves as `composite.row_form`s
        # Small data is placed in the pipeline as tensors (the fastest reads; a
        # serialised pipeline then carries it as a constant of at most this
        # size); larger data stays outside every graph, read by NumPy. Ragged and
        # sparse leaves (NumPy cannot hold them) are always placed in the pipeline.
        self._composite = structure.has_composite(self._data)
        self._in_graph = self._composite or _nbytes(self._data) < IN_GRAPH_MAX_BYTES
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
            lambda a: structure.spec_with_shape(a, [None] + structure.leaf_shape(a)[1:]),
            self._data,
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
        if self._static is not None or self._composite:
            return 1
        row_bytes = sum(
            tf.as_dtype(a.dtype).size * int(np.prod([d or 1 for d in list(a.shape)[1:]]))
            for a in tf.nest.flatten(self._data)  # NumPy arrays or tensors
        )
        batch_bytes = max(1, row_bytes * self._batch_size)
        if not self._in_graph and self._shuffle is False:
            # The NumPy reader in order: a group is one contiguous slice, so a few MB
            # per call cost one copy (`unbatch`), and the reader's per-call overhead
            # (a Python call under the GIL) is paid once per group.
            return int(max(1, min(64, (4 << 20) // batch_bytes)))
        return int(max(1, min(16, 65536 // batch_bytes)))

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

    def _host_arrays(self) -> list[np.ndarray]:
        """The leaves as NumPy arrays (`_host_array`), made once."""
        if self._flat_arrays is None:
            self._flat_arrays = [_host_array(t) for t in tf.nest.flatten(self._data)]
        return self._flat_arrays

    def _tensors(self) -> tuple:
        """The arrays as tensors (small data only), converted once per adapter."""
        if self._data_tensors is None:
            self._data_tensors = tf.nest.map_structure(structure.to_tensor, self._data)
        return self._data_tensors

    def _finish_batch(self, batch: Any, idx: tf.Tensor, batch_size: int) -> Any:
        if self._static is None:
            return batch
        batch = structure.set_batch_dim(batch, batch_size)
        if self._static == "pad":
            return PaddedBatch(tuple(batch), idx >= 0)
        return batch

    def _read(self, indices: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
        """Index batches (`[b]` or groups `[k, b]`) to data batches.

        Small data (`_in_graph`) is gathered from tensors placed in the
        pipeline once. Larger data is read on the host by `tf.numpy_function`,
        so the dataset graph holds indices and a reference to the reader,
        never the data: serialising the pipeline (auto-sharding, cloning it
        per input worker, tf.data's graph rewrites) copies nothing large, and
        each host reads only the rows of its own batches.
        """
        if self._in_graph:
            leaves = tf.nest.flatten(self._data)

            @_plain
            def gather_tensors(idx, forms):
                rows = tf.maximum(idx, 0)
                flat = [
                    composite.gather_rows(leaf, form, rows) for leaf, form in zip(leaves, forms)
                ]
                batch = tf.nest.pack_sequence_as(self._data, flat)
                return self._finish_batch(batch, idx, batch_size)

            if self._row_forms is None:  # once per adapter (a sparse leaf is regrouped)
                self._row_forms = tuple(
                    composite.row_form(t) for t in tf.nest.flatten(self._tensors())
                )
            data = tf.data.Dataset.from_tensors(self._row_forms).repeat()
            return tf.data.Dataset.zip((indices, data)).map(
                gather_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
        arrays = self._host_arrays()
        dtypes = [tf.as_dtype(a.dtype) for a in arrays]
        contiguous = self._shuffle is False and self._static is None
        layout = self._data

        def read(idx: np.ndarray) -> list[np.ndarray]:
            if contiguous and idx.size:
                lo = int(idx.flat[0])
                return [a[lo : lo + idx.size].reshape(idx.shape + a.shape[1:]) for a in arrays]
            rows = np.maximum(idx, 0)
            return [_take(a, rows) for a in arrays]

        @_plain
        def gather_numpy(idx):
            flat = tf.numpy_function(read, [idx], dtypes, stateful=False)
            for t, a in zip(flat, arrays):
                t.set_shape(idx.shape.concatenate(a.shape[1:]))
            return self._finish_batch(tf.nest.pack_sequence_as(layout, flat), idx, batch_size)

        return indices.map(gather_numpy, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _in_order_batches(self) -> tf.data.Dataset:
        """One epoch of small data in order (`shuffle=False`: evaluate, predict), no `map`.

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

    def _index_dataset(self, repeat: bool, first_epoch: int, group: int) -> tf.data.Dataset:
        """The index batches of one epoch, or of every epoch from `first_epoch` on.

        For large data the permutations are computed inside the pipeline (a
        `flat_map` over epoch numbers), so even the indices are no graph
        constant; small data builds one epoch's eagerly (no function to trace).
        """
        if self._in_graph and not repeat:
            return self._epoch_index_groups(tf.constant(first_epoch, tf.int64), group)
        last = _MAX_EPOCHS if repeat else first_epoch + 1
        return tf.data.Dataset.range(first_epoch, last).flat_map(
            _plain(lambda epoch: self._epoch_index_groups(epoch, group))
        )

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        if self._class_weight is not None and self._static == "pad":
            raise ValueError("`class_weight` applies to training only, not to padded evaluation.")
        if (
            self._in_graph
            and self._shuffle is False
            and self._static is None
            and not self._composite  # reshaped into batches: dense leaves only
        ):
            dataset = self._in_order_batches()
            if repeat:
                dataset = dataset.repeat()  # every epoch is the same order
            return self._finish(dataset)
        group = self._group_size()
        dataset = self._read(self._index_dataset(repeat, first_epoch, group), self._batch_size)
        if group > 1:
            dataset = dataset.unbatch()  # [k, b, ...] groups -> batches of b
        return self._finish(dataset)

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
        """Under several input workers, one pipeline per host that reads only its rows.

        Every host computes the same global index batches (a pure function of
        `(seed, epoch)`), keeps the slice of each that its replicas train on
        (replica `r` of `R` takes rows `[r * b, (r + 1) * b)` of the global
        batch, `b = ceil(batch / R)`: the split `experimental_distribute_dataset`
        makes), and gathers only those rows, one per-replica batch per local
        replica. Results equal one process's; no data crosses hosts.
        """
        if not per_host or transform is not None:
            return super().distribute(
                strategy, repeat=repeat, first_epoch=first_epoch, skip=skip, transform=transform
            )
        if self._class_weight is not None and self._static == "pad":
            raise ValueError("`class_weight` applies to training only, not to padded evaluation.")
        batch = self._batch_size

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            replicas = context.num_replicas_in_sync
            local = max(1, replicas // context.num_input_pipelines)
            per_replica = -(-batch // replicas)
            first_row = context.input_pipeline_id * local * per_replica

            @_plain
            def split(idx):
                mine = idx[first_row : first_row + local * per_replica]
                chunks = tf.data.Dataset.range(local).map(
                    _plain(lambda j: mine[j * per_replica : (j + 1) * per_replica])
                )
                return chunks.filter(_plain(lambda c: tf.size(c) > 0))

            indices = self._index_dataset(repeat, first_epoch, 1)
            if skip:
                indices = indices.skip(skip)
            return self._finish(self._read(indices.flat_map(split), per_replica), shard=False)

        return strategy.distribute_datasets_from_function(dataset_fn)

    def _finish(self, dataset: tf.data.Dataset, shard: bool = True) -> tf.data.Dataset:
        """Class weights, sharding and tf.data options, and prefetching.

        `shard=False`: the pipeline is already this host's own (per-host input).
        """
        if self._class_weight is not None:
            dataset = class_weight_lib.apply_to_dataset(dataset, self._class_weight)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
            if shard
            else tf.data.experimental.AutoShardPolicy.OFF
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
        return tf.nest.map_structure(
            lambda a: None if a is None else structure.slice_rows(a, lo, hi), arrays
        )

    return take(0, split_at), take(split_at, n)
