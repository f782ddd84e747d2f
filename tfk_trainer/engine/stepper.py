"""Running executions: the one execution loop of fit, evaluate and predict.

An *execution* is one call of a compiled function that runs up to N steps
(engine/execution.py). Around each call the driver must decide the same
things whatever the mode, and this module decides them once:

- how many steps to ask for: the execution length (compiled, tuned or
  folded: engine/tuning.py), capped at the steps left in the epoch and,
  for training, cut where a callback's step interval falls;
- the `"auto"` XLA fallback: the first call could not compile, so the
  epoch restarts on a fresh iterator without XLA (only before any step of
  the epoch ran: steps already trained cannot be given back);
- how many steps ran. Reading the count from the device forces a host sync,
  so it is read only where it can differ from the request: data of unknown
  length, a persistent iterator over data that does not repeat, a Python
  source whose batches may change shape (and predict, whose outputs are read
  anyway). Elsewhere the execution ran what was asked;
- end of data, and a Python source's change of shape, which ends an
  execution early without ending the data (a new iterator continues it).

`Stepper.executions()` runs an epoch's executions and yields after each
one that ran steps; the driver's loops (engine/loop.py) add only what is
theirs: the batch hooks, the training position, the predicted outputs.

`EpochPlan` (how long an epoch is) and `Iterators` (fresh or persistent
iterators over an adapter) live here too: they are what the stepper runs on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer import distribute
from tfk_trainer.data.base import DataAdapter
from tfk_trainer.engine import predict_order
from tfk_trainer.engine.execution import XlaFallback
from tfk_trainer.engine.tuning import ExecutionLengths, StepsPerExecutionTuner, cut_at_intervals

__all__ = ["EpochPlan", "Iterators", "Stepper"]


@dataclass
class EpochPlan:
    """How many steps an epoch runs, and where its batches come from."""

    adapter: DataAdapter
    steps: int | None  # None: until the data ends
    persistent: bool  # one iterator for all epochs (steps_per_epoch given)

    @classmethod
    def create(cls, adapter: DataAdapter, steps: int | None, argument: str) -> EpochPlan:
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
                raise TypeError(f"`{argument}` must be a positive int or None; received {steps!r}.")
            steps = int(steps)
            if steps == -1:
                if not adapter.is_infinite and adapter.num_batches is not None:
                    steps = None
                else:
                    return cls(adapter, None, persistent=True)
            elif steps <= 0:
                raise ValueError(
                    f"`{argument}` must be a positive int, -1 or None; received {steps}."
                )
            else:
                return cls(adapter, steps, persistent=True)
        if adapter.is_infinite:
            raise ValueError(
                f"The data is infinite (a repeating dataset) and `{argument}` is None, so an "
                f"epoch would never end. Pass `{argument}` (the number of batches per epoch)."
            )
        return cls(adapter, adapter.num_batches, persistent=False)

    @property
    def may_end_early(self) -> bool:
        """Whether an execution may run fewer steps than it asked for: the data's
        length is unknown, a persistent iterator over data that does not repeat may
        run out, or a Python source may change shape. Only then is the count of steps
        that ran read from the device (a host sync)."""
        adapter = self.adapter
        return (
            self.steps is None
            or (self.persistent and not adapter.can_repeat)
            or adapter.can_change_spec
        )


class Iterators:
    """Creates distributed iterators for an adapter, fresh or persistent.

    `skip` starts an iterator part-way into its data, for an exact resume:
    array epochs are pure functions of `(seed, epoch)`, so skipping the
    batches already trained reproduces the rest of the epoch.
    """

    def __init__(self, strategy: tf.distribute.Strategy, plan: EpochPlan, first_epoch: int):
        self._strategy = strategy
        self._plan = plan
        self._first_epoch = first_epoch
        self._persistent = None
        multi_worker = distribute.is_multi_worker(strategy)
        if multi_worker:
            plan.adapter.relax_all_dims()  # workers cannot agree on a mid-epoch shape change
        # `exact`: the iterator surely holds the batches an execution asks for, so the
        # compiled function reads them without an end-of-data check. Across workers
        # each worker's shard may hold a different number of batches, so never there.
        # A persistent iterator over data that does not repeat may run out: checked too.
        self.exact = (
            plan.adapter.exact_batches
            and not multi_worker
            and (not plan.persistent or plan.adapter.can_repeat)
        )

    @property
    def adapter(self) -> DataAdapter:
        return self._plan.adapter

    @property
    def plan(self) -> EpochPlan:
        return self._plan

    def _make(self, epoch: int, repeat: bool, skip: int = 0):
        distributed = self._plan.adapter.distribute(
            self._strategy,
            repeat=repeat,
            first_epoch=epoch,
            skip=skip,
            per_host=distribute.per_host_input(self._strategy),
        )
        # How the input was split decides the order of predictions (predict_order.py).
        return predict_order.tag_input(iter(distributed), distributed)

    def for_epoch(self, epoch: int, skip: int = 0):
        if not self._plan.persistent:
            return self._make(epoch, repeat=False, skip=skip)
        if self._persistent is None:
            self._persistent = self._make(
                self._first_epoch, repeat=self._plan.adapter.can_repeat, skip=skip
            )
        return self._persistent

    def reset(self, epoch: int):
        """A fresh iterator after an XLA fallback (nothing was trained)."""
        self._persistent = None
        return self.for_epoch(epoch)

    def continue_after_spec_change(self, epoch: int):
        """The iterator that carries on after a Python source's batches changed shape.

        The adapter's next dataset continues exactly where the last one
        stopped, so no skip is needed; for a persistent iterator it replaces
        the old one for later epochs too.
        """
        if not self._plan.persistent:
            return self._make(epoch, repeat=False)
        self._persistent = self._make(epoch, repeat=self._plan.adapter.can_repeat)
        return self._persistent

    def after_execution(self, iterator: Any, epoch: int, ran: int, requested: int):
        """`(iterator to go on with, whether the data ended)` after an execution that ran
        `ran` of `requested` steps. Ending early because a Python source changed shape
        is not the end of the data: a new iterator continues it."""
        if ran >= requested:
            return iterator, False
        if self._plan.adapter.spec_changed:
            return self.continue_after_spec_change(epoch), False
        return iterator, True


@functools.lru_cache(maxsize=256)
def _steps_tensor(steps: int) -> tf.Tensor:
    """The execution's step count as a tensor, made once per value (not per call)."""
    return tf.constant(steps, tf.int64)


class Stepper:
    """Runs one mode's executions over one epoch's iterator at a time.

    Args:
        function: the compiled function, called as `function(iterator, steps, exact)`;
            it returns the steps that ran (a scalar tensor), or for predict
            `(steps that ran, outputs)`.
        iterators: where the epochs' iterators come from (its `plan` says how
            long an epoch is).
        lengths: the execution lengths of the run (`RunState.execution_lengths`).
        tuner: the tuner that sets this call's lengths (None: the compiled length);
            it is timed (a host sync) only while it measures.
        returns_outputs: the function returns `(steps, outputs)` (predict); the count
            is then always read, since the outputs are read anyway.
        intervals: optimizer-step intervals that training executions end on
            (`CallbackList.step_intervals`); empty for evaluate and predict.
        on_restart: called when the epoch restarts after an XLA fallback (the
            metrics of the failed attempt are reset there).
    """

    def __init__(
        self,
        function: Callable,
        iterators: Iterators,
        lengths: ExecutionLengths,
        tuner: StepsPerExecutionTuner | None,
        *,
        returns_outputs: bool = False,
        intervals: list[int] | tuple[int, ...] = (),
        on_restart: Callable[[], Any] | None = None,
    ):
        self._function = function
        self.iterators = iterators
        self.plan = iterators.plan
        self.adapter = iterators.adapter
        self._lengths = lengths
        self._tuner = tuner
        self._returns_outputs = returns_outputs
        self.reads_count = returns_outputs or self.plan.may_end_early
        self._intervals = tuple(intervals)
        self._on_restart = on_restart
        self.iterator: Any = None
        self.epoch = 0
        self.ended = False  # the data ended during the current epoch
        # Optimizer steps so far: read from the device once per epoch (only with
        # intervals) and counted on the host in between.
        self.global_step = 0

    @property
    def has_intervals(self) -> bool:
        """Whether executions end on step intervals (they need the optimizer's step)."""
        return bool(self._intervals)

    def start_epoch(self, epoch: int, skip: int = 0, global_step: int = 0) -> None:
        """Takes the epoch's iterator (`skip` batches in, for a resume); `global_step`:
        the optimizer's step count, needed only with step intervals."""
        self.epoch = epoch
        self.iterator = self.iterators.for_epoch(epoch, skip=skip)
        self.ended = False
        self.global_step = global_step

    def requested(self, step: int) -> int:
        """The length of the execution that starts at `step` of the epoch."""
        steps = self.plan.steps
        requested = self._lengths.steps(self._tuner, None if steps is None else steps - step)
        if self._intervals:
            requested = cut_at_intervals(requested, self.global_step, self._intervals)
        return requested

    def run(self, requested: int) -> tuple[int, Any]:
        """One execution of up to `requested` steps: `(steps that ran, what the
        function returned)`. Moves to the iterator that continues the data after a
        change of shape, and sets `ended` when the data ended. Raises `XlaFallback`
        as the function does (see `executions`)."""
        tuner = self._tuner
        timing = tuner is not None and tuner.measuring
        started = time.perf_counter() if timing else 0.0
        try:
            out = self._function(self.iterator, _steps_tensor(requested), self.iterators.exact)
        except tf.errors.OpError:
            self.adapter.raise_pending_error()  # a Python producer's exception, as itself
            raise
        if self.reads_count or timing:
            ran = int(out[0] if self._returns_outputs else out)
        else:
            ran = requested
        if timing:
            tuner.observe(ran, time.perf_counter() - started)
        if ran < requested:
            self.iterator, self.ended = self.iterators.after_execution(
                self.iterator, self.epoch, ran, requested
            )
        return ran, out

    def executions(self, step: int, before: Callable[[int], Any]) -> Iterator[tuple[int, int, Any]]:
        """Runs the epoch's executions from `step` until the epoch's steps are done or
        the data ends; yields `(steps done in the epoch, steps this execution ran,
        what the function returned)` after each execution that ran steps.

        `before(step)` is called before each execution (the batch-begin hook). An
        execution that ran no step because a Python source changed shape is not
        yielded: the next one continues the data. The caller may stop early by
        leaving the loop. After an XLA fallback the epoch restarts on a fresh
        iterator, which is only possible while no step of the epoch has run (a
        resumed epoch has): otherwise `XlaFallback` propagates.
        """
        steps = self.plan.steps
        while steps is None or step < steps:
            requested = self.requested(step)
            before(step)
            try:
                ran, out = self.run(requested)
            except XlaFallback:
                if step:
                    raise
                self.iterator = self.iterators.reset(self.epoch)
                if self._on_restart is not None:
                    self._on_restart()
                continue
            if ran:
                step += ran
                self.global_step += ran
                yield step, ran, out
            if self.ended:
                return
