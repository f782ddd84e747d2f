"""`PyDataset`: a Keras-compatible base class for index-addressable batch sources.

Subclass it like `keras.utils.PyDataset`: implement `__len__` (or the
`num_batches` property, returning None for an infinite dataset) and
`__getitem__(index)` returning `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
`workers`, `use_multiprocessing` and `max_queue_size` control background
prefetching. `keras.utils.PyDataset` instances are accepted as they are.
"""

from __future__ import annotations

from typing import Any


class PyDataset:
    """Base class for Python batch sources read by index.

    Args:
        workers: number of threads (or processes) that call `__getitem__` in
            the background. 1 without multiprocessing reads in the input
            pipeline's own thread. Threads start only when the first 8
            batches of a pass take 1 ms or more each on average: a faster
            `__getitem__` is read in the pipeline's thread, where it is
            quicker than handing each batch to a thread.
        use_multiprocessing: use worker processes instead of threads. The
            dataset is pickled to each worker, so it must be picklable (its
            class defined at module level).
        max_queue_size: how many batches may be prepared ahead.
    """

    def __init__(
        self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10
    ):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"`workers` must be a positive int; received {workers!r}.")
        if (
            isinstance(max_queue_size, bool)
            or not isinstance(max_queue_size, int)
            or max_queue_size < 1
        ):
            raise ValueError(
                f"`max_queue_size` must be a positive int; received {max_queue_size!r}."
            )
        self.workers = workers
        self.use_multiprocessing = bool(use_multiprocessing)
        self.max_queue_size = max_queue_size

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError("A PyDataset must implement `__getitem__(index)`.")

    @property
    def num_batches(self) -> int | None:
        """Batches per epoch; None for an infinite dataset. Defaults to `len(self)`."""
        if hasattr(self, "__len__"):
            return self.__len__()  # not len(): the adapter checks the value and names it
        raise NotImplementedError(
            "A PyDataset must implement `__len__` or the `num_batches` property "
            "(None for an infinite dataset)."
        )

    def on_epoch_begin(self) -> None:
        """Called once at the beginning of every epoch."""

    def on_epoch_end(self) -> None:
        """Called once at the end of every epoch."""
