"""The `DataAdapter` interface: what the epoch driver and adapter wrappers read.

An adapter knows nothing of steps, strategies or callbacks. It answers four
questions for the epoch driver: what dataset to iterate (one epoch, or
repeating across epochs), how many batches an epoch holds if that is known,
the batch size, and which hooks to run at epoch boundaries. Elements are
always tuples `(x,)`, `(x, y)` or `(x, y, sample_weight)`.

Everything a wrapper (`static.StaticShapeAdapter`) or the driver reads from an
adapter is declared here, with a default, so that no code has to probe a
concrete adapter class for an attribute. This module imports no other adapter
module: the concrete adapters import it, and `factory` imports them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import tensorflow as tf

# A dataset-to-dataset function a wrapper applies to each input pipeline's dataset.
Transform = Callable[[tf.data.Dataset], tf.data.Dataset]


class DataAdapter(abc.ABC):
    """The interface between user data and the epoch driver."""

    @abc.abstractmethod
    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        """Returns batched `(x,)`/`(x, y)`/`(x, y, sw)` tuples.

        With `repeat=False` the dataset covers one epoch. With `repeat=True` it
        covers epochs `first_epoch, first_epoch + 1, ...` back to back, for the
        driver's persistent iterator (`steps_per_epoch` set); adapters that
        cannot repeat (user datasets) return their dataset unchanged.
        """

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
        """The distributed dataset the driver iterates: `get_dataset(...)`, then
        `transform` (a wrapper's rebatching), then `skip` global batches, split
        across the strategy's replicas.

        Adapters that build one pipeline per input worker (per host) override
        this with `strategy.distribute_datasets_from_function`, so that no host
        reads (or is sent) the data of another. `per_host`: the driver's word
        (`distribute.per_host_input`) that the strategy has several input
        workers whose pipelines should be built per host.
        """
        dataset = self.get_dataset(repeat=repeat, first_epoch=first_epoch)
        if transform is not None:
            dataset = transform(dataset)
        if skip:
            dataset = dataset.skip(skip)
        return strategy.experimental_distribute_dataset(dataset)

    @property
    def per_replica_batches(self) -> bool:
        """True when the data's batches are per-replica batches (a dataset function's),
        not global batches the strategy splits."""
        return False

    @property
    @abc.abstractmethod
    def num_batches(self) -> int | None:
        """Batches in one epoch, or None when unknown or infinite."""

    @property
    def is_infinite(self) -> bool:
        """True when the source never ends: epochs need `steps_per_epoch`."""
        return False

    @property
    def element_spec(self) -> tuple:
        """The spec the model is built from (concrete non-batch dims where known)."""
        return self.get_dataset().element_spec

    @property
    def one_shot(self) -> bool:
        """True for sources that cannot be read twice (a plain generator)."""
        return False

    @property
    def exact_batches(self) -> bool:
        """Whether every epoch holds exactly `num_batches` batches (endless with
        `repeat=True`), guaranteed by how the adapter built the dataset. The
        driver then reads batches without checking for the end of the data."""
        return False

    @property
    def can_change_spec(self) -> bool:
        """Whether a dataset may end early with `spec_changed` (the driver then reads step counts)."""
        return False

    @property
    def spec_changed(self) -> bool:
        """True when the last dataset ended early because later batches changed shape.

        The driver then makes a new iterator (`get_dataset` continues the same
        data with relaxed shapes) instead of treating the end as end-of-data.
        Only Python sources do this.
        """
        return False

    def raise_pending_error(self) -> None:  # noqa: B027 - optional hook
        """Re-raises an exception a Python producer hit (generators, PyDataset workers)."""

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size when the adapter batches the data itself; None otherwise."""
        return None

    @property
    def first_batch(self) -> tuple | None:
        """The first batch, when the adapter already read it (Python sources read it for
        their element spec); None otherwise.

        `StaticShapeAdapter` takes its batch size from it, so that finding the size
        never reads a source a second time (a one-shot generator cannot be reread).
        """
        return None

    def relax_all_dims(self) -> None:  # noqa: B027 - optional hook
        """Makes every non-batch dimension of the element spec unknown from the start.

        Called under multi-worker strategies, whose workers could not agree on a
        mid-epoch change of shapes (`spec_changed`). Only sources whose spec comes
        from a first batch (Python sources) have anything to relax.
        """

    @property
    def can_repeat(self) -> bool:
        """Whether `get_dataset(repeat=True)` really repeats the data."""
        return False

    def on_epoch_begin(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Called exactly once before each epoch's first batch."""

    def on_epoch_end(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Called exactly once after each epoch's last batch."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases workers or other resources; called at the end of fit/evaluate/predict."""
