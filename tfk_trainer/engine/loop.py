"""The Python epoch driver: epochs, executions, validation cadence, callbacks.

It owns policy and nothing numeric: how many steps the next execution may
run (capped at the steps left in the epoch), when an iterator is fresh or
persists across epochs, when to validate, and which hooks to call with
which step index. Numbers stay on the device until a reader needs them.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfk_trainer import distribute
from tfk_trainer.data.base import DataAdapter
from tfk_trainer.engine import predict_order
from tfk_trainer.engine.execution import XlaFallback
from tfk_trainer.engine.logs import LazyLogs
from tfk_trainer.engine.run_state import Position, RunState
from tfk_trainer.engine.tuning import StepsPerExecutionTuner, cut_at_intervals

if TYPE_CHECKING:  # the driver receives a CallbackList; it never imports the callbacks
    from tfk_trainer.callbacks.base import CallbackList

__all__ = ["Driver", "EpochPlan", "Iterators", "PeerUnavailableError", "Position"]

log = logging.getLogger("tfk_trainer")


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
        # Exact executions read without an end-of-data check. Across workers each
        # worker's shard may hold a different number of batches, so never there.
        # A persistent iterator over data that does not repeat may run out: checked too.
        self.exact = (
            plan.adapter.exact_batches
            and not multi_worker
            and (not plan.persistent or plan.adapter.can_repeat)
        )

    @property
    def adapter(self) -> DataAdapter:
        return self._plan.adapter

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


class PeerUnavailableError(RuntimeError):
    """A worker of a multi-worker cluster died or became unreachable."""


_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)


def peer_unavailable(error: BaseException) -> PeerUnavailableError | None:
    """The clear error for a collective that failed because a cluster peer is gone."""
    collective = isinstance(error, tf.errors.InternalError) and "Collective ops is aborted" in str(
        error
    )
    if not (isinstance(error, _PEER_ERRORS) or collective):
        return None
    detail = str(error).strip().splitlines()[-1][:300] if str(error).strip() else ""
    return PeerUnavailableError(
        "Training stopped because a worker of the cluster is unavailable (it crashed, was "
        f"preempted or lost its network): {type(error).__name__}: {detail}. Restart every "
        "worker with the same command; with BackupAndRestore training resumes from the last "
        "backup."
    )


def _execute(function: Callable, adapter: DataAdapter, *args) -> Any:
    """Runs one execution; a Python producer's exception surfaces as itself."""
    try:
        return function(*args)
    except tf.errors.OpError:
        adapter.raise_pending_error()
        raise


def _optimizer_step(model: Any) -> int:
    """The optimizer's step count, read on the host (0 without an optimizer)."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    if iterations is None:
        return 0
    value = iterations.numpy() if hasattr(iterations, "numpy") else tf.convert_to_tensor(iterations)
    return int(np.asarray(value).reshape(()))


@functools.lru_cache(maxsize=256)
def _steps_tensor(steps: int) -> tf.Tensor:
    """The execution's step count as a tensor, made once per value (not per call)."""
    return tf.constant(steps, tf.int64)


def _run_execution(
    function: Callable,
    iterators: Iterators,
    iterator: Any,
    requested: int,
    tuner: StepsPerExecutionTuner | None,
) -> Any:
    """One execution of up to `requested` steps; timed (host-synced) while `tuner` measures."""
    timing = tuner is not None and tuner.measuring
    started = time.perf_counter() if timing else 0.0
    out = _execute(function, iterators.adapter, iterator, _steps_tensor(requested), iterators.exact)
    if timing:
        ran = out[0] if isinstance(out, tuple) else out
        tuner.observe(int(ran), time.perf_counter() - started)
    return out


class Driver:
    """Runs fit, evaluate and predict over a run's compiled functions.

    `model` is used only through its public API (`reset_metrics`,
    `metrics_names`, `distribute_strategy`, `stop_training`, `optimizer`); everything of the
    engine (compiled functions, execution lengths, the training position)
    comes from `state`, the run's `RunState`.
    """

    def __init__(self, model: Any, state: RunState):
        self.model = model
        self.state = state

    def _tuner(self, mode: str, callbacks: CallbackList) -> StepsPerExecutionTuner | None:
        """The tuner that sets this call's execution lengths (None: the compiled value)."""
        tuner = self.state.execution_lengths.tuner(
            mode,
            observed=callbacks.watches_every_batch(mode),
            fold=self.state.fold_executions,
        )
        if tuner is not None:
            tuner.reset_for_call()
        return tuner

    def _requested(self, tuner: StepsPerExecutionTuner | None, plan: EpochPlan, step: int) -> int:
        steps_left = None if plan.steps is None else plan.steps - step
        return self.state.execution_lengths.steps(tuner, steps_left)

    # -- evaluate ----------------------------------------------------------

    def evaluate_loop(
        self,
        plan: EpochPlan,
        callbacks: CallbackList,
        *,
        iterators: Iterators | None = None,
    ) -> dict[str, float]:
        model = self.model
        model.reset_metrics()
        model.stop_evaluating = False  # issue 19 (5): a callback may stop it, as in Keras
        iterators = iterators or Iterators(model.distribute_strategy, plan, 0)
        callbacks.on_test_begin()
        plan.adapter.on_epoch_begin(0)
        iterator = iterators.for_epoch(0)
        function = self.state.executor.test
        tuner = self._tuner("test", callbacks)
        step = 0
        while plan.steps is None or step < plan.steps:
            callbacks.on_test_batch_begin(step)
            requested = self._requested(tuner, plan, step)
            try:
                ran_t = _run_execution(function, iterators, iterator, requested, tuner)
            except XlaFallback:
                iterator = iterators.reset(0)
                model.reset_metrics()
                continue
            exact = plan.steps is None or plan.adapter.can_change_spec
            ran = int(ran_t) if exact else requested
            iterator, ended = iterators.after_execution(iterator, 0, ran, requested)
            if ran == 0:
                if ended:
                    break
                continue
            step += ran
            if callbacks.wants_batch("on_test_batch_end"):
                callbacks.on_test_batch_end(step - 1, self._lazy_logs())
            if ended or model.stop_evaluating:  # issue 19 (5)
                break
        plan.adapter.on_epoch_end(0)
        if step == 0:
            raise ValueError(
                "`evaluate` received no data: the input yielded no batches (an empty dataset, "
                "generator or `validation_data`)."
            )
        logs = self.state.materialized_logs()
        callbacks.on_test_end(logs)
        return logs

    # -- predict -----------------------------------------------------------

    def predict_loop(self, plan: EpochPlan, callbacks: CallbackList) -> Any:
        model = self.model
        model.stop_predicting = False  # issue 19 (5): a callback may stop it, as in Keras
        iterators = Iterators(model.distribute_strategy, plan, 0)
        callbacks.on_predict_begin()
        plan.adapter.on_epoch_begin(0)
        iterator = iterators.for_epoch(0)
        tuner = self._tuner("predict", callbacks)
        chunks: list[Any] = []
        step = 0
        while plan.steps is None or step < plan.steps:
            callbacks.on_predict_batch_begin(step)
            requested = self._requested(tuner, plan, step)
            try:
                ran_t, outputs = _run_execution(
                    self.state.executor.predict, iterators, iterator, requested, tuner
                )
            except XlaFallback:
                iterator = iterators.reset(0)
                chunks.clear()
                continue
            ran = int(ran_t)
            iterator, ended = iterators.after_execution(iterator, 0, ran, requested)
            if ran == 0:
                if ended:
                    break
                continue
            outputs = drop_padding(outputs)
            chunks.append(outputs)
            step += ran
            if callbacks.wants_batch("on_predict_batch_end"):
                callbacks.on_predict_batch_end(step - 1, {"outputs": outputs})
            if ended or model.stop_predicting:  # issue 19 (5)
                break
        plan.adapter.on_epoch_end(0)
        callbacks.on_predict_end()
        if not chunks:
            raise ValueError(
                "`predict` received no data: the input yielded no batches. Check that "
                "`x` is not empty and that `steps` is not larger than the data."
            )
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *chunks)

    # -- fit ---------------------------------------------------------------

    def fit_loop(
        self,
        plan: EpochPlan,
        callbacks: CallbackList,
        *,
        initial_epoch: int,
        epochs: int,
        validation: Callable[[], dict[str, float]] | None,
        validation_freq: Any,
    ) -> None:
        model = self.model
        tuner = self._tuner("train", callbacks)
        adapter = plan.adapter
        model.stop_training = False
        position = Position(
            epoch=initial_epoch, first_epoch=initial_epoch, data_seed=getattr(adapter, "seed", None)
        )
        self.state.position = position
        callbacks.on_train_begin()
        resume = self.state.resume_from
        self.state.resume_from = None
        skip = 0
        if resume is not None:
            # A backup was restored (weights, optimizer, metrics): continue at its position.
            position.epoch, position.step = resume.epoch, resume.step
            position.first_epoch, position.consumed = resume.first_epoch, resume.consumed
            if resume.data_seed is not None and hasattr(adapter, "seed"):
                adapter.seed = resume.data_seed
                position.data_seed = resume.data_seed
            skip = resume.consumed if plan.persistent else resume.step
        iterators = Iterators(model.distribute_strategy, plan, position.first_epoch)
        # Callbacks that act at multiples of N steps: executions end on those multiples.
        intervals = callbacks.step_intervals()
        epoch_logs: dict[str, float] = {}
        ran_out_warned = False  # issue 19 (17)
        for epoch in range(position.epoch, epochs):
            resumed_mid_epoch = resume is not None and epoch == resume.epoch and resume.step > 0
            if not resumed_mid_epoch:
                model.reset_metrics()
            plan.adapter.on_epoch_begin(epoch)
            callbacks.on_epoch_begin(epoch)
            iterator = iterators.for_epoch(
                epoch, skip=skip if resumed_mid_epoch or plan.persistent else 0
            )
            skip = 0
            step = position.step if resumed_mid_epoch else 0
            position.epoch, position.step = epoch, step
            ran_out = False
            # One host read per epoch; counted on the host in between.
            global_step = _optimizer_step(model) if intervals else 0
            while plan.steps is None or step < plan.steps:
                requested = self._requested(tuner, plan, step)
                if intervals:
                    requested = cut_at_intervals(requested, global_step, intervals)
                callbacks.on_train_batch_begin(step)
                try:
                    ran_t = _run_execution(
                        self.state.executor.train, iterators, iterator, requested, tuner
                    )
                except XlaFallback:
                    if step:
                        raise
                    iterator = iterators.reset(epoch)
                    model.reset_metrics()
                    continue
                # Reading the count forces a host sync: only when the data may end.
                if (
                    plan.steps is None
                    or (plan.persistent and not plan.adapter.can_repeat)
                    or plan.adapter.can_change_spec
                ):
                    ran = int(ran_t)
                else:
                    ran = requested
                iterator, ended = iterators.after_execution(iterator, epoch, ran, requested)
                step += ran
                position.step = step
                position.consumed += ran
                global_step += ran
                if ran:
                    if callbacks.wants_batch("on_train_batch_end"):
                        callbacks.on_train_batch_end(step - 1, self._lazy_logs())
                self.state.preemption_point()  # every worker, every execution (preemption.py)
                if ended:
                    if plan.steps is not None:
                        ran_out = True
                    break
                if model.stop_training:
                    break
            epoch_complete = plan.steps is None or step >= plan.steps or ran_out
            plan.adapter.on_epoch_end(epoch)
            if step == 0:
                warnings.warn(
                    "Your input ran out of data before training could run a step in epoch "
                    f"{epoch}; training stops. Make sure the data can provide "
                    "`steps_per_epoch * epochs` batches (e.g. with `.repeat()`).",
                    stacklevel=3,
                )
                model.stop_training = True
                break
            epoch_logs = self.state.materialized_logs()
            if validation is not None and should_validate(epoch, validation_freq):
                val_logs = validation()
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            epoch_logs = dict(sorted(epoch_logs.items()))
            if epoch_complete:  # a stop mid-epoch leaves the position inside it
                position.epoch, position.step = epoch + 1, 0
            callbacks.on_epoch_end(epoch, epoch_logs)
            self.state.preemption_point()
            if ran_out and not plan.adapter.one_shot:
                # issue 19 (17): finite data shorter than `steps_per_epoch` ends the
                # epoch; the next one starts a fresh pass (Keras 3), said once per fit.
                if not ran_out_warned:
                    ran_out_warned = True
                    warnings.warn(
                        f"Your input ran out of data in epoch {epoch} after {step} of "
                        f"{plan.steps} steps; each epoch ends there and the next starts a "
                        "fresh pass over the data. Use `.repeat()` for full epochs.",
                        stacklevel=3,
                    )
                iterators.reset(epoch + 1)
            elif ran_out:
                warnings.warn(
                    f"Your input ran out of data in epoch {epoch} after {step} of "
                    f"{plan.steps} steps; training stops (a one-shot generator cannot "
                    "start again). Pass a callable returning a fresh generator, or make the "
                    "data provide `steps_per_epoch * epochs` batches.",
                    stacklevel=3,
                )
                break
            if model.stop_training:
                break
        optimizer = model.optimizer
        if getattr(optimizer, "use_ema", False) and epochs > 0:
            # Keras's fit ends by moving an EMA optimizer's averages into the weights.
            optimizer.finalize_variable_values(model.trainable_variables)
        callbacks.on_train_end(epoch_logs)

    def _lazy_logs(self) -> LazyLogs:
        return LazyLogs(self.model.metrics_names, self.state.read_logs)


def drop_padding(outputs_and_valid: tuple) -> Any:
    """NumPy outputs with padded rows (static-shape mode) removed."""
    outputs, valid = outputs_and_valid
    valid = valid.numpy()
    outputs = tf.nest.map_structure(lambda t: t.numpy(), outputs)
    if valid.all():
        return outputs
    return tf.nest.map_structure(lambda a: a[valid], outputs)


def should_validate(epoch: int, validation_freq: Any) -> bool:
    """Whether the 0-based `epoch` validates: every `validation_freq` epochs (an
    int), or the 1-indexed epochs listed (Keras's rule)."""
    if isinstance(validation_freq, int):
        return (epoch + 1) % validation_freq == 0
    return (epoch + 1) in validation_freq


def validation_count(initial_epoch: int, epochs: int, validation_freq: Any) -> int:
    """How many times a `fit` over `range(initial_epoch, epochs)` validates."""
    return sum(1 for e in range(initial_epoch, epochs) if should_validate(e, validation_freq))


def check_validation_freq(validation_freq: Any) -> Any:
    if isinstance(validation_freq, bool):
        raise TypeError(
            f"`validation_freq` must be an int or a list of ints; received {validation_freq!r}."
        )
    if isinstance(validation_freq, (int, np.integer)):
        if validation_freq < 1:
            raise ValueError(f"`validation_freq` must be >= 1; received {validation_freq}.")
        return int(validation_freq)
    if isinstance(validation_freq, (list, tuple, set)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in validation_freq
    ):
        return {int(v) for v in validation_freq}
    raise TypeError(
        "`validation_freq` must be an int (validate every N epochs) or a list of "
        f"1-indexed epochs; received {validation_freq!r}."
    )
