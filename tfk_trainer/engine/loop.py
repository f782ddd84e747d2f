"""The Python epoch driver: epochs, validation cadence, callbacks.

It owns policy and nothing numeric: when an epoch starts and ends, when an
iterator is fresh or persists across epochs, where training resumes, when
to validate, and which hooks to call with which step index. Running each
execution (its length, the XLA fallback, end of data, changes of shape) is
the `Stepper`'s (engine/stepper.py), the one execution loop of fit,
evaluate and predict. Numbers stay on the device until a reader needs them.

`EpochPlan` and `Iterators` live in engine/stepper.py; they are re-exported
here for the modules that import them from the driver.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfk_trainer.engine.logs import LazyLogs
from tfk_trainer.engine.run_state import Position, RunState
from tfk_trainer.engine.stepper import EpochPlan, Iterators, Stepper
from tfk_trainer.engine.tuning import StepsPerExecutionTuner

if TYPE_CHECKING:  # the driver receives a CallbackList; it never imports the callbacks
    from tfk_trainer.callbacks.base import CallbackList

__all__ = ["Driver", "EpochPlan", "Iterators", "PeerUnavailableError", "Position"]

log = logging.getLogger("tfk_trainer")


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


def _optimizer_step(model: Any) -> int:
    """The optimizer's step count, read on the host (0 without an optimizer)."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    if iterations is None:
        return 0
    value = iterations.numpy() if hasattr(iterations, "numpy") else tf.convert_to_tensor(iterations)
    return int(np.asarray(value).reshape(()))


class Driver:
    """Runs fit, evaluate and predict over a run's compiled functions.

    `model` is used only through its public API (`reset_metrics`,
    `metrics_names`, `distribute_strategy`, `stop_training`, `optimizer`); everything of the
    engine (compiled functions, execution lengths, the training position)
    comes from `state`, the run's `RunState`. Running executions (lengths, the
    XLA fallback, end of data, changes of shape) is the `Stepper`'s
    (engine/stepper.py); the loops here add the hooks and what their mode keeps.
    """

    def __init__(self, model: Any, state: RunState):
        self.model = model
        self.state = state
        self._ran_out_warned = False  # issue 19 (17): said once per fit

    def _stepper(
        self,
        mode: str,
        iterators: Iterators,
        tuner: StepsPerExecutionTuner | None,
        **options: Any,
    ) -> Stepper:
        """The stepper over this run's compiled `mode` function ("train", "test", "predict")."""
        return Stepper(
            getattr(self.state.executor, mode),
            iterators,
            self.state.execution_lengths,
            tuner,
            **options,
        )

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

    def _lazy_logs(self) -> LazyLogs:
        return LazyLogs(self.model.metrics_names, self.state.read_logs)

    # -- evaluate ----------------------------------------------------------

    def evaluate_loop(
        self,
        plan: EpochPlan,
        callbacks: CallbackList,
        *,
        iterators: Iterators | None = None,
    ) -> dict[str, float]:
        """One pass of evaluation (or one validation run of a fit, on its `iterators`)."""
        model = self.model
        model.reset_metrics()
        model.stop_evaluating = False  # issue 19 (5): a callback may stop it, as in Keras
        iterators = iterators or Iterators(model.distribute_strategy, plan, 0)
        callbacks.on_test_begin()
        plan.adapter.on_epoch_begin(0)
        stepper = self._stepper(
            "test", iterators, self._tuner("test", callbacks), on_restart=model.reset_metrics
        )
        stepper.start_epoch(0)
        watched = callbacks.wants_batch("on_test_batch_end")
        step = 0
        for step, _, _ in stepper.executions(0, callbacks.on_test_batch_begin):
            if watched:
                callbacks.on_test_batch_end(step - 1, self._lazy_logs())
            if model.stop_evaluating:  # issue 19 (5)
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
        """One pass of prediction: the outputs as NumPy, in input order, padding dropped."""
        model = self.model
        model.stop_predicting = False  # issue 19 (5): a callback may stop it, as in Keras
        iterators = Iterators(model.distribute_strategy, plan, 0)
        callbacks.on_predict_begin()
        plan.adapter.on_epoch_begin(0)
        chunks: list[Any] = []
        stepper = self._stepper(
            "predict",
            iterators,
            self._tuner("predict", callbacks),
            returns_outputs=True,
            on_restart=chunks.clear,
        )
        stepper.start_epoch(0)
        watched = callbacks.wants_batch("on_predict_batch_end")
        for step, _, (_, outputs) in stepper.executions(0, callbacks.on_predict_batch_begin):
            outputs = drop_padding(outputs)
            chunks.append(outputs)
            if watched:
                callbacks.on_predict_batch_end(step - 1, {"outputs": outputs})
            if model.stop_predicting:  # issue 19 (5)
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
        """Trains `range(initial_epoch, epochs)` (from a restored backup's position, when
        BackupAndRestore set one in `on_train_begin`), validating on its cadence."""
        model = self.model
        tuner = self._tuner("train", callbacks)
        model.stop_training = False
        position, resume = self._begin_fit(plan, callbacks, initial_epoch)
        # A resume skips the batches already drawn: from the persistent iterator's
        # start, or from the start of the resumed epoch.
        skip = 0 if resume is None else (resume.consumed if plan.persistent else resume.step)
        stepper = self._stepper(
            "train",
            Iterators(model.distribute_strategy, plan, position.first_epoch),
            tuner,
            # Callbacks that act at multiples of N steps: executions end on those multiples.
            intervals=callbacks.step_intervals(),
            on_restart=model.reset_metrics,
        )
        epoch_logs: dict[str, float] = {}
        for epoch in range(position.epoch, epochs):
            mid_epoch = resume is not None and epoch == resume.epoch and resume.step > 0
            step = self._train_epoch(
                stepper,
                callbacks,
                epoch,
                start=position.step if mid_epoch else 0,
                skip=skip if mid_epoch or plan.persistent else 0,
            )
            skip = 0
            ran_out = stepper.ended and plan.steps is not None
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
            complete = plan.steps is None or step >= plan.steps or ran_out
            epoch_logs = self._end_epoch(callbacks, epoch, complete, validation, validation_freq)
            if ran_out and not self._next_pass(stepper, epoch, step):
                break
            if model.stop_training:
                break
        self._end_fit(callbacks, epochs, epoch_logs)

    def _begin_fit(
        self, plan: EpochPlan, callbacks: CallbackList, initial_epoch: int
    ) -> tuple[Position, Position | None]:
        """The run's `Position`, made before `on_train_begin`, and moved to the backup's
        position if a BackupAndRestore restored one there: `(position, resume point)`."""
        adapter = plan.adapter
        position = Position(
            epoch=initial_epoch, first_epoch=initial_epoch, data_seed=getattr(adapter, "seed", None)
        )
        self.state.position = position
        callbacks.on_train_begin()
        resume = self.state.resume_from
        self.state.resume_from = None
        if resume is not None:
            # A backup was restored (weights, optimizer, metrics): continue at its position.
            position.epoch, position.step = resume.epoch, resume.step
            position.first_epoch, position.consumed = resume.first_epoch, resume.consumed
            if resume.data_seed is not None and hasattr(adapter, "seed"):
                adapter.seed = resume.data_seed
                position.data_seed = resume.data_seed
        return position, resume

    def _train_epoch(
        self, stepper: Stepper, callbacks: CallbackList, epoch: int, *, start: int, skip: int
    ) -> int:
        """Runs `epoch`'s training executions from step `start` (a resumed epoch starts
        part-way, its metrics restored, not reset); returns the steps done in the epoch."""
        model, position = self.model, self.state.position
        if start == 0:
            model.reset_metrics()
        stepper.adapter.on_epoch_begin(epoch)
        callbacks.on_epoch_begin(epoch)
        # One host read of the optimizer's step per epoch, and only for step intervals.
        global_step = _optimizer_step(model) if stepper.has_intervals else 0
        stepper.start_epoch(epoch, skip=skip, global_step=global_step)
        position.epoch, position.step = epoch, start
        watched = callbacks.wants_batch("on_train_batch_end")
        step = start
        for step, ran, _ in stepper.executions(start, callbacks.on_train_batch_begin):
            position.step = step
            position.consumed += ran
            self._after_execution(callbacks, step, watched)
            if model.stop_training:
                break
        return step

    def _after_execution(self, callbacks: CallbackList, step: int, watched: bool) -> None:
        """What runs on the host after each training execution that ran steps (`step`:
        the steps done in the epoch, the position already advanced): the batch-end
        hook. Any other per-execution check of a fit belongs here, after the hook."""
        if watched:
            callbacks.on_train_batch_end(step - 1, self._lazy_logs())
        self.state.preemption_point()  # every worker, every execution (preemption.py)

    def _end_epoch(
        self,
        callbacks: CallbackList,
        epoch: int,
        complete: bool,
        validation: Callable[[], dict[str, float]] | None,
        validation_freq: Any,
    ) -> dict[str, float]:
        """The epoch's logs (validated on its cadence), the position moved past a
        complete epoch (a stop mid-epoch leaves it inside), then `on_epoch_end`."""
        epoch_logs = self.state.materialized_logs()
        if validation is not None and should_validate(epoch, validation_freq):
            val_logs = validation()
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        epoch_logs = dict(sorted(epoch_logs.items()))
        if complete:
            self.state.position.epoch, self.state.position.step = epoch + 1, 0
        callbacks.on_epoch_end(epoch, epoch_logs)
        self.state.preemption_point()
        return epoch_logs

    def _next_pass(self, stepper: Stepper, epoch: int, step: int) -> bool:
        """Finite data ran out before `steps_per_epoch`: whether training goes on with a
        fresh pass over the data (Keras 3, issue 19 (17)). A one-shot generator cannot
        start again, so training stops there."""
        plan = stepper.plan
        if plan.adapter.one_shot:
            warnings.warn(
                f"Your input ran out of data in epoch {epoch} after {step} of "
                f"{plan.steps} steps; training stops (a one-shot generator cannot "
                "start again). Pass a callable returning a fresh generator, or make the "
                "data provide `steps_per_epoch * epochs` batches.",
                stacklevel=4,
            )
            return False
        if not self._ran_out_warned:
            self._ran_out_warned = True
            warnings.warn(
                f"Your input ran out of data in epoch {epoch} after {step} of "
                f"{plan.steps} steps; each epoch ends there and the next starts a "
                "fresh pass over the data. Use `.repeat()` for full epochs.",
                stacklevel=4,
            )
        stepper.iterators.reset(epoch + 1)
        return True

    def _end_fit(self, callbacks: CallbackList, epochs: int, epoch_logs: dict[str, float]) -> None:
        optimizer = self.model.optimizer
        if getattr(optimizer, "use_ema", False) and epochs > 0:
            # Keras's fit ends by moving an EMA optimizer's averages into the weights.
            optimizer.finalize_variable_values(self.model.trainable_variables)
        callbacks.on_train_end(epoch_logs)


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
