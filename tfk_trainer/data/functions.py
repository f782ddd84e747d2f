"""Input as a function of `tf.distribute.InputContext`: one pipeline per host.

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(GLOBAL_BATCH)
        files = tf.data.Dataset.list_files(PATTERN, shuffle=False)
        files = files.shard(context.num_input_pipelines, context.input_pipeline_id)
        return files.interleave(tf.data.TFRecordDataset).map(parse).batch(batch).repeat()

    model.fit(tfk.DatasetFunction(dataset_fn), epochs=3, steps_per_epoch=100)

The function runs once per input worker (host), each time with that host's
context, through `strategy.distribute_datasets_from_function`: each host
builds and reads only its own shard, and nothing is serialised or sent
between hosts (`experimental_distribute_dataset` would build the whole
pipeline once and rewrite it per worker). This is tf-keras's
`DatasetCreator` and Orbit's input contract: the dataset yields
per-replica batches, and each step takes one per replica.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfk_trainer.data import class_weight as class_weight_lib
from tfk_trainer.data import structure
from tfk_trainer.data.base import DataAdapter, Transform

_plain = tf.autograph.experimental.do_not_convert


class DatasetFunction:
    """A dataset made per input worker: `fn(input_context) -> tf.data.Dataset`.

    Pass it as `x` (or `validation_data`) to `fit`, `evaluate` and `predict`.
    The dataset must yield per-replica batches of `(x,)`, `(x, y)` or
    `(x, y, sample_weight)` (use `input_context.get_per_replica_batch_size`),
    and shard itself by `input_context.input_pipeline_id` out of
    `input_context.num_input_pipelines` where the hosts should read different
    data. An infinite dataset (`.repeat()`) needs `steps_per_epoch` (and
    `validation_steps`); its iterator then persists across epochs.

    Args:
        fn: Called with a `tf.distribute.InputContext`; returns a `tf.data.Dataset`.
        input_options: Optional `tf.distribute.InputOptions` for
            `distribute_datasets_from_function` (prefetching to devices, ...).
    """

    def __init__(
        self,
        fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
        input_options: tf.distribute.InputOptions | None = None,
    ):
        if not callable(fn):
            raise TypeError(
                "DatasetFunction(fn): `fn` must be a callable taking a "
                f"tf.distribute.InputContext and returning a tf.data.Dataset; received "
                f"{type(fn).__name__}."
            )
        if input_options is not None and not isinstance(input_options, tf.distribute.InputOptions):
            raise TypeError(
                "DatasetFunction(input_options=...) must be a tf.distribute.InputOptions or "
                f"None; received {type(input_options).__name__}."
            )
        self.fn = fn
        self.input_options = input_options

    def __call__(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = self.fn(input_context)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                "The function of a tfk_trainer.DatasetFunction must return a tf.data.Dataset; "
                f"it returned {type(dataset).__name__}."
            )
        return dataset

    def __repr__(self) -> str:
        return f"DatasetFunction({getattr(self.fn, '__name__', self.fn)!r})"


def is_dataset_function(value: Any) -> bool:
    return isinstance(value, DatasetFunction)


class DatasetFunctionAdapter(DataAdapter):
    """A `DatasetFunction`, distributed with `distribute_datasets_from_function`.

    The element spec and the checks come from one probe dataset, made with
    the default context (one pipeline, one replica): making a tf.data
    pipeline reads no data. The number of steps an epoch holds depends on
    the replicas, so it is left unknown: the driver reads until the data
    ends, or `steps_per_epoch` steps.
    """

    def __init__(
        self, function: DatasetFunction, *, class_weight: dict | None = None, argument: str = "x"
    ):
        self._function = function
        self._class_weight = class_weight
        self._argument = argument
        probe = function(tf.distribute.InputContext())
        spec = probe.element_spec
        structure.check_not_namedtuple(spec, argument)
        if isinstance(spec, tuple):
            if not 1 <= len(spec) <= 3:
                raise ValueError(
                    f"The dataset of the DatasetFunction passed as `{argument}` must yield "
                    "`(x,)`, `(x, y)` or `(x, y, sample_weight)`; its elements are tuples of "
                    f"length {len(spec)}: {spec}."
                )
            for part in spec:
                structure.check_not_namedtuple(part, argument)
        self._wrap = not isinstance(spec, tuple)
        if class_weight is not None and (not isinstance(spec, tuple) or len(spec) < 2):
            raise ValueError(
                f"`class_weight` needs targets, but the DatasetFunction passed as `{argument}` "
                "yields no `y`."
            )
        cardinality = int(probe.cardinality())
        if cardinality == 0:
            raise ValueError(
                f"The dataset of the DatasetFunction passed as `{argument}` is empty (0 batches)."
            )
        self._infinite = cardinality == int(tf.data.INFINITE_CARDINALITY)
        self._probe = self._prepare(probe)

    def _prepare(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        if self._wrap:
            dataset = dataset.map(_plain(lambda *x: (x[0] if len(x) == 1 else x,)))
        if self._class_weight is not None:
            dataset = class_weight_lib.apply_to_dataset(dataset, self._class_weight)
        return dataset

    @property
    def num_batches(self) -> int | None:
        return None

    @property
    def is_infinite(self) -> bool:
        return self._infinite

    @property
    def per_replica_batches(self) -> bool:
        return True

    @property
    def element_spec(self) -> tuple:
        return self._probe.element_spec

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        """The dataset of the default context (one pipeline, one replica), made once."""
        return self._probe

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
        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            dataset = self._prepare(self._function(context))
            if transform is not None:
                dataset = transform(dataset)
            if skip:  # `skip` counts global steps; each takes one batch per local replica
                per_pipeline = max(1, context.num_replicas_in_sync // context.num_input_pipelines)
                dataset = dataset.skip(skip * per_pipeline)
            return dataset

        return strategy.distribute_datasets_from_function(
            dataset_fn, options=self._function.input_options
        )
