"""Python generators and `PyDataset`s, read through `tf.data.Dataset.from_generator`.

Both end as a tf.data pipeline whose element spec comes from the first batch:
the batch dimension is None, the others are the first batch's, so the step
is traced with static feature shapes (a CNN with unknown spatial dims runs
about half as fast). When a later batch differs in a dimension, that
dimension is relaxed to None: the current dataset ends cleanly before that
batch (`spec_changed` turns True), the driver asks for a new dataset, which
yields that batch first and then carries on where the old one stopped (the
same generator, the same PyDataset order), and the step is traced once more
for the relaxed shapes. No batch is lost, repeated or reordered. Under a
multi-worker strategy every dimension is relaxed from the start, since the
workers could not agree on when to switch. The first batch is read once
and handed on, never replayed (Keras replays its two peeked batches in later
epochs). A Python exception raised while producing a batch is kept and
re-raised to the user as itself, not as a TensorFlow error.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer.data import composite, structure
from tfk_trainer.data.base import DataAdapter
from tfk_trainer.data.class_weight import apply_to_dataset
from tfk_trainer.data.py_dataset import PyDataset


def _normalize(element: Any, source: str) -> tuple:
    """An element as a tuple of NumPy leaves, per the unpacking rule of the Keras 3 API docs."""
    structure.check_not_namedtuple(element, source)
    x, y, sw = structure.unpack_x_y_sample_weight(element)
    packed = structure.pack_x_y_sample_weight(x, y, sw)

    def leaf(value):
        if isinstance(value, (tf.Tensor, tf.Variable)):
            return value.numpy()
        # Ragged and sparse tensors stay as they are, SciPy matrices become sparse
        # tensors (as in Keras): `from_generator` takes composite specs.
        return structure.to_array(value, source)

    return tf.nest.map_structure(leaf, packed)


def _relaxed_spec(batch: tuple) -> tuple:
    return tf.nest.map_structure(
        lambda a: structure.spec_with_shape(a, [None] * structure.leaf_rank(a)), batch
    )


def _fits(spec: tuple, batch: tuple) -> bool:
    """Whether every leaf of `batch` has the non-batch dims that `spec` fixes."""
    for s, a in zip(tf.nest.flatten(spec), tf.nest.flatten(batch)):
        dims = s.shape.as_list()[1:]
        if any(d is not None and d != n for d, n in zip(dims, structure.leaf_shape(a)[1:])):
            return False
    return True


def _relax(spec: tuple, batch: tuple) -> tuple:
    """`spec` with each non-batch dim that `batch` does not share set to None."""

    def relax(s, a):
        dims = s.shape.as_list()
        shape = [dims[0]] + [
            d if d == n else None for d, n in zip(dims[1:], structure.leaf_shape(a)[1:])
        ]
        return structure.spec_with_shape(s, shape)

    return tf.nest.map_structure(relax, spec, batch)


class _SpecChange(Exception):  # noqa: N818 - a signal inside the producer, never seen by users
    """A batch did not fit the dataset's shapes: end this dataset before it."""

    def __init__(self, batch: tuple):
        super().__init__()
        self.batch = batch


def _concrete_spec(batch: tuple) -> tuple:
    return tf.nest.map_structure(
        lambda a: structure.spec_with_shape(a, [None] + structure.leaf_shape(a)[1:]), batch
    )


class _PythonSource(DataAdapter):
    """Shared machinery: spec from the first batch, checks, error capture."""

    _source = "x"

    def __init__(self, class_weight: dict | None):
        self._class_weight = class_weight
        self._error: BaseException | None = None
        self._first: tuple | None = None
        self._structure: Any = None

    def _set_first(self, first: tuple) -> None:
        self._first = first
        self._structure = tf.nest.map_structure(lambda _: None, first)
        self._spec = _concrete_spec(first)  # what the current dataset yields
        self._carried: tuple | None = None  # the batch that did not fit, yielded next

    def relax_all_dims(self) -> None:
        """Every non-batch dim unknown from the start (multi-worker strategies)."""
        self._spec = _relaxed_spec(self._first)

    @property
    def can_change_spec(self) -> bool:
        return True

    @property
    def spec_changed(self) -> bool:
        return self._carried is not None

    def _same_as_first(self, element: Any) -> bool:
        """The common case, checked cheaply: a flat tuple of arrays like the first batch's."""
        first = self._first
        if type(element) is not tuple or len(element) != len(first):
            return False
        return all(
            type(a) is np.ndarray
            and type(f) is np.ndarray
            and a.dtype == f.dtype
            and a.ndim == f.ndim
            for a, f in zip(element, first)
        )

    def _check(self, element: Any) -> tuple:
        if self._same_as_first(element):  # ~50 us of Python per batch saved
            if not _fits(self._spec, element):
                self._spec = _relax(self._spec, element)
                raise _SpecChange(element)
            return element
        batch = _normalize(element, self._source)
        try:
            tf.nest.assert_same_structure(batch, self._first)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"`{self._source}` yielded batches of inconsistent structure: the first was "
                f"{_describe(self._first)}, a later one {_describe(batch)}. Every batch must "
                "have the same structure of x, y and sample_weight."
            ) from e
        for a, b in zip(tf.nest.flatten(batch), tf.nest.flatten(self._first)):
            if (
                structure.leaf_rank(a) != structure.leaf_rank(b)
                or composite.numpy_kind(a) != composite.numpy_kind(b)
                or type(a) is not type(b)
                and (structure.is_composite(a) or structure.is_composite(b))
            ):
                raise ValueError(
                    f"`{self._source}` yielded a batch whose arrays differ in rank or kind from "
                    f"the first batch: {_describe(batch)} vs {_describe(self._first)}."
                )
        batch = tuple(tf.nest.map_structure(composite.cast_like, batch, self._first))
        if not _fits(self._spec, batch):
            self._spec = _relax(self._spec, batch)
            raise _SpecChange(batch)
        return batch

    def _take_carried(self) -> tuple | None:
        carried, self._carried = self._carried, None
        return carried

    @property
    def element_spec(self) -> tuple:
        return _concrete_spec(self._first)

    @property
    def first_batch(self) -> tuple:
        """The first batch, read when the adapter was made (for the spec)."""
        return self._first

    def _dataset_from(self, make_iterator: Callable[[], Iterator[tuple]]) -> tf.data.Dataset:
        def generate():
            try:
                yield from make_iterator()
            except _SpecChange as change:
                self._carried = change.batch  # this dataset ends; the next one starts with it
            except GeneratorExit:
                raise
            except BaseException as e:  # kept and re-raised to the user by `raise_pending_error`
                self._error = e
                raise

        dataset = tf.data.Dataset.from_generator(generate, output_signature=self._spec)
        if self._class_weight is not None:
            dataset = apply_to_dataset(dataset, self._class_weight)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def raise_pending_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error


def _describe(batch: tuple) -> str:
    return str(tf.nest.map_structure(composite.describe_leaf, batch))


class GeneratorAdapter(_PythonSource):
    """A Python generator or iterator, or a callable returning a fresh one per epoch.

    A one-shot generator covers one pass: it cannot feed several epochs
    unless `steps_per_epoch` splits that one (possibly infinite) pass.
    """

    _source = "x (generator)"

    def __init__(self, source: Any, *, class_weight: dict | None = None, argument: str = "x"):
        super().__init__(class_weight)
        self._source = f"{argument} (generator)"
        self._factory = source if callable(source) and not hasattr(source, "__next__") else None
        self._iterator = iter(self._factory() if self._factory else source)
        try:
            first = next(self._iterator)
        except StopIteration:
            raise ValueError(f"The generator passed as `{argument}` yielded no batches.") from None
        self._set_first(_normalize(first, self._source))
        self._pending_first = True
        self._passes = 0
        self._lock = threading.Lock()

    @property
    def one_shot(self) -> bool:
        return self._factory is None

    @property
    def num_batches(self) -> None:
        return None

    def _batches(self) -> Iterator[tuple]:
        carried = self._take_carried()
        with self._lock:
            if carried is None:  # a new pass (a carried batch continues the current one)
                if self._passes:
                    self._iterator = iter(self._factory())
                    self._pending_first = False
                self._passes += 1
            iterator = self._iterator
            if self._pending_first:
                self._pending_first = False
                yield tuple(self._first)
        if carried is not None:
            yield carried
        for element in iterator:
            yield self._check(element)

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        if self._passes and self._factory is None and not self.spec_changed:
            raise ValueError(
                f"The generator passed as `{self._source.split()[0]}` was already consumed by an "
                "earlier epoch: a one-shot generator provides one pass of data. Pass "
                "`steps_per_epoch` (with an infinite generator), or a callable that returns a "
                "fresh generator."
            )
        return self._dataset_from(self._batches)


class PyDatasetAdapter(_PythonSource):
    """A `tfk_trainer.data.PyDataset` or `keras.utils.PyDataset`, prefetched by workers."""

    def __init__(
        self,
        dataset: Any,
        *,
        shuffle: bool | str = False,
        class_weight: dict | None = None,
        argument: str = "x",
    ):
        super().__init__(class_weight)
        self._source = f"{argument} (PyDataset)"
        self._dataset = dataset
        self._shuffle = shuffle is True
        try:
            num = dataset.num_batches
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"The PyDataset passed as `{argument}` has an invalid `__len__`/`num_batches`: {e}"
            ) from e
        if num is not None:
            if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
                raise ValueError(
                    f"The PyDataset passed as `{argument}` reports {num!r} batches; `__len__`/"
                    "`num_batches` must be a non-negative int, or None for an infinite dataset."
                )
            if num == 0:
                raise ValueError(f"The PyDataset passed as `{argument}` is empty (0 batches).")
        self._num_batches = None if num is None else int(num)
        self._workers = int(getattr(dataset, "workers", 1) or 1)
        self._use_processes = bool(getattr(dataset, "use_multiprocessing", False))
        self._queue_size = int(getattr(dataset, "max_queue_size", 10) or 10)
        self._executors: list[concurrent.futures.Executor] = []
        self._set_first(_normalize(self._get(0), self._source))
        self._epoch = 0
        self._remaining: Iterator[int] | None = None  # indices left after a spec change
        self._rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))

    def _get(self, index: int) -> Any:
        try:
            return self._dataset[index]
        except IndexError as e:
            raise IndexError(
                f"The PyDataset passed as `{self._source.split()[0]}` raised IndexError for "
                f"batch {index}; its `__len__`/`num_batches` ({self._num_batches}) is larger "
                "than the number of batches `__getitem__` can serve."
            ) from e

    @property
    def num_batches(self) -> int | None:
        return self._num_batches

    @property
    def is_infinite(self) -> bool:
        return self._num_batches is None

    @property
    def can_repeat(self) -> bool:
        return True

    def on_epoch_begin(self, epoch: int) -> None:
        self._epoch = epoch
        self._dataset.on_epoch_begin()

    def on_epoch_end(self, epoch: int) -> None:
        self._dataset.on_epoch_end()

    def _indices(self, repeat: bool) -> Iterator[int]:
        if self._num_batches is None:
            yield from _count()
            return
        while True:
            order = np.arange(self._num_batches)
            if self._shuffle:
                self._rng.shuffle(order)
            yield from (int(i) for i in order)
            if not repeat:
                return

    def _executor(self) -> concurrent.futures.Executor:
        if self._use_processes:
            executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._dataset,),
            )
        else:
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix="tfk_pydataset"
            )
        self._executors.append(executor)
        return executor

    def _batches(self, repeat: bool) -> Iterator[tuple]:
        carried = self._take_carried()
        if carried is None:
            indices = self._indices(repeat)
        else:  # continue the interrupted pass: its carried batch, then its other indices
            indices, self._remaining = self._remaining, None
            yield carried
        if self._use_processes or self._workers > 1:
            if not self._use_processes:
                # Threads pay for themselves only on batches that take a while to
                # make: time a few first, in this thread, before starting any.
                slow = yield from self._probe(indices)
                if not slow:
                    yield from self._inline(indices)
                    return
            yield from self._pooled(indices)
            return
        yield from self._inline(indices)

    def _inline(self, indices: Iterator[int], limit: int | None = None):
        """Batches read in the producer's own thread (tf.data runs it in the background),
        at most `limit` of them; returns `(seconds spent in __getitem__, batches read)`."""
        spent, count = 0.0, 0
        for index in indices:
            started = time.perf_counter()
            batch = self._get(index)
            spent += time.perf_counter() - started
            count += 1
            try:
                yield self._check(batch)
            except _SpecChange:
                self._remaining = indices
                raise
            if count == limit:
                break
        return spent, count

    def _probe(self, indices: Iterator[int]):
        """Reads up to `_PROBE_BATCHES` batches inline, timing `__getitem__`; returns
        whether they took long enough (`_THREADS_FROM_S` on average) for threads to help.

        A producer thread already overlaps batch making with the training step;
        `workers` threads add throughput only when one thread cannot keep up,
        and each handoff costs tens of microseconds of thread switching and GIL
        contention, which on a fast `__getitem__` (a slice of an in-memory list)
        made the workers slower than one thread.
        """
        spent, count = yield from self._inline(indices, limit=_PROBE_BATCHES)
        return count > 0 and spent / count >= _THREADS_FROM_S

    def _pooled(self, indices: Iterator[int]) -> Iterator[tuple]:
        """Batches read by the worker pool, up to `max_queue_size` ahead, in order."""
        executor = self._executor()
        pending: deque = deque()  # (index, future)
        fetch = _fetch_item if self._use_processes else self._get
        try:
            for index in indices:
                pending.append((index, executor.submit(fetch, index)))
                if len(pending) >= self._queue_size:
                    yield self._check(pending.popleft()[1].result())
            while pending:
                yield self._check(pending.popleft()[1].result())
        except _SpecChange:
            # The prefetched batches are read again by the next dataset, in order.
            self._remaining = itertools.chain([i for i, _ in pending], indices)
            raise
        finally:
            for _, future in pending:
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
            if executor in self._executors:
                self._executors.remove(executor)

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        return self._dataset_from(lambda: self._batches(repeat))

    def close(self) -> None:
        for executor in list(self._executors):
            executor.shutdown(wait=True, cancel_futures=True)
        self._executors.clear()


# Thread workers start only when `__getitem__` averages this long over the first
# batches of a pass: below it one producer thread makes over 1000 batches a second.
_THREADS_FROM_S = 1e-3
_PROBE_BATCHES = 8


def _count() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1


_WORKER_DATASET: Any = None


def _init_worker(dataset: Any) -> None:
    """Runs once per worker process: the dataset is unpickled there once."""
    global _WORKER_DATASET
    _WORKER_DATASET = dataset


def _fetch_item(index: int) -> Any:
    """Runs in a worker process: one `__getitem__` call."""
    return _WORKER_DATASET[index]


def is_generator_like(x: Any) -> bool:
    """Whether `x` is read with `next()`: a generator or another iterator (not an array)."""
    return isinstance(x, types.GeneratorType) or (
        hasattr(x, "__next__") and hasattr(x, "__iter__") and not structure.is_array_like(x)
    )


def is_py_dataset(x: Any) -> bool:
    """Whether `x` is a `tfk_trainer.data.PyDataset` or a `keras.utils.PyDataset`."""
    return isinstance(x, (PyDataset, keras.utils.PyDataset))
